"""A user's sessions with an agent, their messages, and the agent's long-term memory of the user."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from agentstream.core.ids import NAME_PATTERN
from agentstream.store.memories import MAX_CHARS
from agentstream.web.deps import Caller, Cursor, Limit, OwnedAgentId, StoreDep, UserId
from agentstream.web.models import MemoryList, MemoryOut, MessageList, SessionList, errors

router = APIRouter(tags=["conversations"])


class MemoryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(..., pattern=NAME_PATTERN.pattern)
    content: str = Field(..., min_length=1, max_length=MAX_CHARS)
    ttl_days: float | None = Field(None, gt=0, le=3650, description="forget it after this many days")


@router.get(
    "/agents/{agent_id}/sessions",
    response_model=None,
    responses={200: {"model": SessionList}, **errors(401, 404, 413, 422, 503)},
)
async def list_sessions(
    agent_id: OwnedAgentId,
    caller: Caller,
    store: StoreDep,
    user_id: UserId = "anonymous",
    limit: Limit = 20,
    cursor: Cursor = None,
) -> dict[str, Any]:
    page = await store.conversations.sessions(caller.tenant, agent_id, user_id, limit=limit, cursor=cursor)
    return {"data": [s.to_dict() for s in page.items], "next_cursor": page.next_cursor}


@router.get(
    "/agents/{agent_id}/sessions/{session_id}/messages",
    response_model=None,
    responses={200: {"model": MessageList}, **errors(401, 404, 413, 422, 503)},
)
async def list_messages(
    agent_id: OwnedAgentId,
    session_id: str,
    caller: Caller,
    store: StoreDep,
    user_id: UserId = "anonymous",
    limit: Limit = 50,
    cursor: Cursor = None,
) -> dict[str, Any]:
    page = await store.conversations.messages(
        caller.tenant, agent_id, user_id, session_id, limit=limit, cursor=cursor
    )
    return {"data": [m.to_dict() for m in page.items], "next_cursor": page.next_cursor}


@router.delete(
    "/agents/{agent_id}/sessions/{session_id}", status_code=204, responses=errors(401, 404, 413, 422, 503)
)
async def delete_session(
    agent_id: OwnedAgentId, session_id: str, caller: Caller, store: StoreDep, user_id: UserId = "anonymous"
) -> Response:
    await store.conversations.delete_session(caller.tenant, agent_id, user_id, session_id)
    return Response(status_code=204)


@router.get(
    "/agents/{agent_id}/memories",
    response_model=None,
    responses={200: {"model": MemoryList}, **errors(401, 404, 413, 422, 503)},
)
async def list_memories(
    agent_id: OwnedAgentId, caller: Caller, store: StoreDep, user_id: UserId = "anonymous"
) -> dict[str, Any]:
    items = await store.memories.list(caller.tenant, agent_id, user_id)
    return {"data": [m.to_dict() for m in items]}


@router.post(
    "/agents/{agent_id}/memories",
    status_code=201,
    response_model=None,
    responses={201: {"model": MemoryOut}, **errors(400, 401, 404, 409, 413, 422, 503)},
)
async def add_memory(
    agent_id: OwnedAgentId, body: MemoryIn, caller: Caller, store: StoreDep
) -> dict[str, Any]:
    item = await store.memories.add(
        caller.tenant, agent_id, body.user_id, body.content, ttl_days=body.ttl_days
    )
    return {"data": item.to_dict()}


@router.delete("/agents/{agent_id}/memories", status_code=204, responses=errors(401, 404, 413, 422, 503))
async def forget_all(
    agent_id: OwnedAgentId, caller: Caller, store: StoreDep, user_id: UserId = "anonymous"
) -> Response:
    await store.memories.delete_all(caller.tenant, agent_id, user_id)
    return Response(status_code=204)


@router.delete(
    "/agents/{agent_id}/memories/{memory_id}", status_code=204, responses=errors(401, 404, 413, 422, 503)
)
async def forget(
    agent_id: OwnedAgentId, memory_id: str, caller: Caller, store: StoreDep, user_id: UserId = "anonymous"
) -> Response:
    await store.memories.delete(caller.tenant, agent_id, user_id, memory_id)
    return Response(status_code=204)
