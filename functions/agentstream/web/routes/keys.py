"""API keys (admin only): issue one (shown once), list, revoke."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from agentstream.core.ids import NAME_PATTERN
from agentstream.web.auth import forget_key
from agentstream.web.deps import Admin, Cursor, Limit, StoreDep
from agentstream.web.models import KeyCreatedOut, KeyList, errors

router = APIRouter(tags=["keys"])


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: str = Field(..., pattern=NAME_PATTERN.pattern, description="whose records the key reaches")
    name: str = Field("", max_length=100, description="a label, e.g. where the key is used")


@router.post(
    "/keys",
    status_code=201,
    response_model=None,
    responses={201: {"model": KeyCreatedOut}, **errors(400, 401, 403, 413, 422, 503)},
)
async def create_key(body: KeyIn, admin: Admin, store: StoreDep) -> dict[str, Any]:
    record, token = await store.keys.create(body.tenant, body.name)
    return {"data": {**record.to_dict(), "key": token}}


@router.get(
    "/keys", response_model=None, responses={200: {"model": KeyList}, **errors(401, 403, 413, 422, 503)}
)
async def list_keys(
    admin: Admin, store: StoreDep, limit: Limit = 50, cursor: Cursor = None
) -> dict[str, Any]:
    page = await store.keys.list(limit=limit, cursor=cursor)
    return {"data": [k.to_dict() for k in page.items], "next_cursor": page.next_cursor}


@router.delete("/keys/{key_id}", status_code=204, responses=errors(401, 403, 404, 413, 422, 503))
async def revoke_key(key_id: str, admin: Admin, store: StoreDep, request: Request) -> Response:
    await store.keys.delete(key_id)
    forget_key(request.app, key_id)
    return Response(status_code=204)
