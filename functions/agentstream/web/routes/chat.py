"""Running an agent: JSON (``/chat``) or Server-Sent Events (``/chat/stream`` and the seed's alias)."""

from __future__ import annotations

import math
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.background import BackgroundTask

from agentstream.core.events import Done, Error, ToolCall, ToolResult, event_to_dict
from agentstream.core.runs import RunHandle
from agentstream.core.service import ChatService
from agentstream.errors import AgentStreamError
from agentstream.web.deps import Caller, Chat, invocation_deadline
from agentstream.web.models import (
    CHUNK,
    ChatFailure,
    ChatOut,
    ChatRequest,
    ErrorBody,
    errors,
    sse,
    stream_errors,
)
from agentstream.web.sse import EventStreamResponse, closing

router = APIRouter(tags=["chat"])

# HTTP status of a JSON chat whose run ended with an error event, by the event's code (other
# ``upstream_*`` codes: 502; anything else: 500)
_ERROR_STATUS = {
    "upstream_timeout": 504,
    "step_limit_exceeded": 502,
    "store_unavailable": 503,
    "rate_limited": 429,
    "context_length_exceeded": 400,
    "model_not_found": 502,
}


async def _start(
    agent_id: str, body: ChatRequest, caller: Caller, chat: ChatService, request: Request
) -> RunHandle:
    started = time.monotonic()
    return await chat.start(
        caller.tenant,
        agent_id,
        body.to_input(),
        invocation_deadline=invocation_deadline(request),
        started=started,
    )


@router.post(
    "/agents/{agent_id}/chat",
    response_model=None,
    responses={
        200: {"model": ChatOut},
        **errors(401, 404, 413, 422, 429, 503),
        400: {"model": ChatFailure | ErrorBody, "description": "an unreadable body, or the run's error"},
        **{s: {"model": ChatFailure, "description": "the run ended with this error"} for s in (502, 504)},
    },
)
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
        if not run.ended:  # the client went away: stop the run like a stream would
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
    # the answer goes out first; the run's last writes finish before the invocation does
    background = BackgroundTask(run.wait)
    if error is not None:
        status = _ERROR_STATUS.get(error.code, 502 if error.code.startswith("upstream") else 500)
        content = {"error": {"code": error.code, "message": error.message}, "data": data}
        if error.retry_after is not None and error.retry_after > 0:
            headers["Retry-After"] = str(math.ceil(error.retry_after))
        return JSONResponse(content, status_code=status, headers=headers, background=background)
    return JSONResponse({"data": data}, headers=headers, background=background)


_SSE_DOC: dict[int | str, dict[str, Any]] = {
    **sse("Server-Sent Events: start, content, tool_call, tool_result, metadata, error, done", CHUNK),
    **stream_errors(400, 401, 404, 413, 422, 429, 503),
}


@router.post(
    "/agents/{agent_id}/chat/stream", response_class=EventStreamResponse, status_code=200, responses=_SSE_DOC
)
@router.post(
    "/agents/{agent_id}/chat/lumosai/stream",
    response_class=EventStreamResponse,
    status_code=200,
    responses=_SSE_DOC,
)
async def chat_stream(
    agent_id: str, body: ChatRequest, caller: Caller, chat: Chat, request: Request
) -> EventStreamResponse:
    run = await _start(agent_id, body, caller, chat, request)
    return EventStreamResponse(
        run,
        ping_seconds=chat.settings.sse_ping_seconds,
        send_timeout=chat.settings.send_timeout_seconds,
        on_close=closing(body.stream_options.on_disconnect),
    )
