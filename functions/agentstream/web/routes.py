"""HTTP routes of CONTRACT.md. Each one: authenticate, validate, call the core, shape the answer."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from agentstream.config import Settings
from agentstream.core.agents import AgentPatch, AgentSpec
from agentstream.core.events import Done, Error, ToolCall, ToolResult
from agentstream.core.runs import RunHandle
from agentstream.core.service import ChatRequest, ChatService
from agentstream.errors import AgentStreamError
from agentstream.store.base import Store
from agentstream.web.auth import Principal, authenticate
from agentstream.web.sse import EventStreamResponse, event_payload

__all__ = ["router"]

router = APIRouter()
api = APIRouter(prefix="/api/v1")

Caller = Annotated[Principal, Depends(authenticate)]


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _chat(request: Request) -> ChatService:
    chat: ChatService = request.app.state.chat
    return chat


def _deadline(request: Request, settings: Settings) -> float | None:
    """Monotonic time by which a run must end: the Lambda deadline minus a safety margin."""
    remaining = getattr(request.scope.get("aws.context"), "get_remaining_time_in_millis", None)
    if not callable(remaining):
        return None
    try:
        left_ms = float(remaining())
    except (TypeError, ValueError):
        return None
    return time.monotonic() + (left_ms - settings.deadline_margin_ms) / 1000


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@api.post("/agents", status_code=201)
async def create_agent(spec: AgentSpec, caller: Caller, request: Request) -> dict[str, Any]:
    agent = await _store(request).create_agent(caller.tenant, spec)
    return {"data": agent.model_dump()}


@api.get("/agents")
async def list_agents(
    caller: Caller,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> dict[str, Any]:
    page = await _store(request).list_agents(caller.tenant, limit=limit, cursor=cursor)
    return {"data": [a.model_dump() for a in page.items], "next_cursor": page.next_cursor}


@api.get("/agents/{agent_id}")
async def get_agent(agent_id: str, caller: Caller, request: Request) -> dict[str, Any]:
    agent = await _store(request).get_agent(caller.tenant, agent_id)
    return {"data": agent.model_dump()}


@api.patch("/agents/{agent_id}")
async def update_agent(agent_id: str, patch: AgentPatch, caller: Caller, request: Request) -> dict[str, Any]:
    agent = await _store(request).update_agent(caller.tenant, agent_id, patch)
    return {"data": agent.model_dump()}


@api.delete("/agents/{agent_id}", status_code=204)
async def delete_agent(agent_id: str, caller: Caller, request: Request) -> Response:
    await _store(request).delete_agent(caller.tenant, agent_id)
    return Response(status_code=204)


async def _start(agent_id: str, body: ChatRequest, caller: Principal, request: Request) -> RunHandle:
    started = time.monotonic()
    chat = _chat(request)
    return await chat.start(
        caller.tenant, agent_id, body, deadline=_deadline(request, chat.settings), started=started
    )


@api.post("/agents/{agent_id}/chat")
async def chat(agent_id: str, body: ChatRequest, caller: Caller, request: Request) -> JSONResponse:
    run = await _start(agent_id, body, caller, request)
    tools: list[dict[str, Any]] = []
    error: Error | None = None
    done: Done | None = None
    try:
        async for _, event in run.events():
            if isinstance(event, ToolCall | ToolResult):
                tools.append(event_payload(event))
            elif isinstance(event, Error):
                error = event
            elif isinstance(event, Done):
                done = event
    finally:
        run.cancel()
    if done is None:  # the producer always ends with Done unless cancelled
        raise AgentStreamError("the run ended without a result")
    data = {
        "run_id": run.run_id,
        "session_id": run.session_id,
        "status": done.status,
        "content": done.final_response,
        "total_steps": done.total_steps,
        "memories_updated": done.memories_updated,
        "memories_count": done.memories_count,
        "usage": done.usage.to_dict(),
        "metrics": done.metrics,
        "tool_events": tools,
    }
    headers = {"X-Run-Id": run.run_id}
    if error is not None:
        status = (
            504 if error.code == "upstream_timeout" else 502 if error.code.startswith("upstream") else 500
        )
        content = {"error": {"code": error.code, "message": error.message}, "data": data}
        return JSONResponse(content, status_code=status, headers=headers)
    return JSONResponse({"data": data}, headers=headers)


def _close_run(on_disconnect: str) -> Any:
    def close(run: RunHandle) -> None:
        if run.finished:
            return
        if on_disconnect == "continue":
            run.detach()
        else:
            run.cancel()

    return close


@api.post("/agents/{agent_id}/chat/stream")
@api.post("/agents/{agent_id}/chat/lumosai/stream")
async def chat_stream(
    agent_id: str, body: ChatRequest, caller: Caller, request: Request
) -> EventStreamResponse:
    run = await _start(agent_id, body, caller, request)
    settings: Settings = request.app.state.settings
    return EventStreamResponse(
        run,
        ping_seconds=settings.sse_ping_seconds,
        on_close=_close_run(body.stream_options.on_disconnect),
    )


router.include_router(api)
