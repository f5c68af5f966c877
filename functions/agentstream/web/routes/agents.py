"""Agents: create, list, read, update (optionally with ``If-Match: <version>``), delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Response

from agentstream.core.agents import AgentPatch, AgentSpec
from agentstream.errors import BadRequest
from agentstream.web.deps import Caller, Cursor, Limit, StoreDep
from agentstream.web.models import AgentList, AgentOut, errors

router = APIRouter(tags=["agents"])


@router.post(
    "/agents",
    status_code=201,
    response_model=None,
    responses={201: {"model": AgentOut}, **errors(400, 401, 409, 413, 422, 503)},
)
async def create_agent(spec: AgentSpec, caller: Caller, store: StoreDep) -> dict[str, Any]:
    agent = await store.agents.create(caller.tenant, spec)
    return {"data": agent.model_dump()}


@router.get(
    "/agents", response_model=None, responses={200: {"model": AgentList}, **errors(401, 413, 422, 503)}
)
async def list_agents(
    caller: Caller, store: StoreDep, limit: Limit = 20, cursor: Cursor = None
) -> dict[str, Any]:
    page = await store.agents.list(caller.tenant, limit=limit, cursor=cursor)
    return {"data": [a.model_dump() for a in page.items], "next_cursor": page.next_cursor}


@router.get(
    "/agents/{agent_id}",
    response_model=None,
    responses={200: {"model": AgentOut}, **errors(401, 404, 413, 422, 503)},
)
async def get_agent(agent_id: str, caller: Caller, store: StoreDep, response: Response) -> dict[str, Any]:
    agent = await store.agents.get(caller.tenant, agent_id)
    response.headers["ETag"] = f'"{agent.version}"'
    return {"data": agent.model_dump()}


@router.patch(
    "/agents/{agent_id}",
    response_model=None,
    responses={200: {"model": AgentOut}, **errors(400, 401, 404, 409, 413, 422, 503)},
)
async def update_agent(
    agent_id: str,
    patch: AgentPatch,
    caller: Caller,
    store: StoreDep,
    response: Response,
    if_match: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    expected = None
    if if_match is not None:
        try:
            expected = int(if_match.strip().removeprefix("W/").strip('"'))
        except ValueError as e:
            raise BadRequest("If-Match must hold the agent's version, as its ETag gives it") from e
    agent = await store.agents.update(caller.tenant, agent_id, patch, expected_version=expected)
    response.headers["ETag"] = f'"{agent.version}"'
    return {"data": agent.model_dump()}


@router.delete("/agents/{agent_id}", status_code=204, responses=errors(401, 404, 413, 422, 503))
async def delete_agent(agent_id: str, caller: Caller, store: StoreDep) -> Response:
    await store.agents.delete(caller.tenant, agent_id)
    return Response(status_code=204)
