"""Running an agent: JSON (``/chat``) or Server-Sent Events (``/chat/stream`` and the seed's alias)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from agentstream.core.events import Done, Error, ToolCall, ToolResult, event_to_dict
from agentstream.core.runs import RunHandle
from agentstream.core.service import ChatRequest, ChatService
from agentstream.errors import AgentStreamError
from agentstream.web.deps import Caller, Chat
from agentstream.web.sse import EventStreamResponse

router = APIRouter(tags=["chat"])

# HTTP status of a JSON chat whose run ended with an error event, by the event's code
_ERROR_STATUS = {"upstream_timeout": 504, "step_limit_exceeded": 502, "store_unavailable": 503}


def _deadline(request: Request, margin_ms: int) -> float | None:
    """Monotonic time by which a run must end: the Lambda deadline minus a safety margin."""
    remaining = getattr(request.scope.get("aws.context"), "get_remaining_time_in_millis", None)
    if not callable(remaining):
        return None
    try:
        left_ms = float(remaining())
    except (TypeError, ValueError):
        return None
    return time.monotonic() + (left_ms - margin_ms) / 1000


async def _start(
    agent_id: str, body: ChatRequest, caller: Caller, chat: ChatService, request: Request
) -> RunHandle:
    started = time.monotonic()
    deadline = _deadline(request, chat.settings.deadline_margin_ms)
    return await chat.start(caller.tenant, agent_id, body, deadline=deadline, started=started)


@router.post("/agents/{agent_id}/chat")
async def chat_json(
    agent_id: str, body: ChatRequest, caller: Caller, chat: Chat, request: Request
) -> JSONResponse:
    run = await _start(agent_id, body, caller, chat, request)
    tool_events: list[dict[str, Any]] = []
    error: Error | None = None
    done: Done | None = None
    try:
        async for _, event in run.events():
            if isinstance(event, ToolCall | ToolResult):
                tool_events.append(event_to_dict(event))
            elif isinstance(event, Error):
                error = event
            elif isinstance(event, Done):
                done = event
    finally:
        if not run.finished:  # the client went away: stop the run like a stream would
            run.stop()
    if done is None:
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
        "tool_events": tool_events,
    }
    headers = {"X-Run-Id": run.run_id}
    if error is not None:
        status = _ERROR_STATUS.get(error.code, 502 if error.code.startswith("upstream") else 500)
        content = {"error": {"code": error.code, "message": error.message}, "data": data}
        return JSONResponse(content, status_code=status, headers=headers)
    return JSONResponse({"data": data}, headers=headers)


def _on_close(on_disconnect: str) -> Callable[[RunHandle], None]:
    def close(run: RunHandle) -> None:
        if run.finished:
            return
        run.detach()
        if on_disconnect == "cancel":
            run.stop()

    return close


@router.post("/agents/{agent_id}/chat/stream")
@router.post("/agents/{agent_id}/chat/lumosai/stream")
async def chat_stream(
    agent_id: str, body: ChatRequest, caller: Caller, chat: Chat, request: Request
) -> EventStreamResponse:
    run = await _start(agent_id, body, caller, chat, request)
    return EventStreamResponse(
        run,
        ping_seconds=chat.settings.sse_ping_seconds,
        on_close=_on_close(body.stream_options.on_disconnect),
    )
