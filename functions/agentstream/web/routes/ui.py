"""The AI SDK's chat routes (``useChat`` with ``DefaultChatTransport``): a turn answered as a UI message
stream, and the transport's resume request, which replays the chat's running run from its start.

A UI stream is resumable, so its run goes on when the client goes away (a reload mid-answer); a
client stops it with ``POST /api/v1/runs/{run_id}/cancel`` (the run id is the message's id, and its
metadata's ``run_id``).
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from agentstream.core.ids import NAME_PATTERN
from agentstream.errors import NotFound
from agentstream.web.deps import Caller, Chat, StoreDep, invocation_deadline
from agentstream.web.models import sse, stream_errors
from agentstream.web.routes.runs import REPLAY_MARGIN_SECONDS, Replay
from agentstream.web.sse import MEDIA_TYPE, EventStreamResponse, closing, sse_headers
from agentstream.web.ui_stream import HEADERS, UIChatRequest, UIMessageStream

router = APIRouter(tags=["chat"])

_UI_DOC = sse("the AI SDK UI message stream (Server-Sent Events, x-vercel-ai-ui-message-stream: v1)")


@router.post(
    "/agents/{agent_id}/chat/ui",
    response_class=EventStreamResponse,
    status_code=200,
    responses={**_UI_DOC, **stream_errors(400, 401, 404, 413, 422, 429, 503)},
)
async def chat_ui(
    agent_id: str, body: UIChatRequest, caller: Caller, chat: Chat, request: Request
) -> EventStreamResponse:
    started = time.monotonic()
    run = await chat.start(
        caller.tenant,
        agent_id,
        body.to_input(),
        invocation_deadline=invocation_deadline(request),
        started=started,
    )
    return EventStreamResponse(
        run,
        ping_seconds=chat.settings.sse_ping_seconds,
        send_timeout=chat.settings.send_timeout_seconds,
        on_close=closing("continue"),
        encode=UIMessageStream(),
        headers=HEADERS,
    )


@router.get(
    "/agents/{agent_id}/chat/ui/{chat_id}/stream",
    response_class=StreamingResponse,
    responses={
        **_UI_DOC,
        204: {"description": "the chat has no running answer"},
        **stream_errors(401, 413, 422, 503),
    },
)
async def resume_chat_ui(
    agent_id: str, chat_id: str, caller: Caller, store: StoreDep, chat: Chat, request: Request
) -> Response:
    """The chat's running answer, from its start, then live until its end; 204 when none runs."""
    if NAME_PATTERN.match(chat_id) is None:
        return Response(status_code=204)
    run_id = await store.active_runs.get(caller.tenant, agent_id, chat_id)
    if run_id is None:
        return Response(status_code=204)
    try:
        run = await store.runs.get(caller.tenant, run_id)
    except NotFound:  # its record was never written (the run did not start)
        return Response(status_code=204)
    if run.status != "running" or run.lost:
        return Response(status_code=204)
    deadline = invocation_deadline(request)
    if deadline is not None:
        deadline -= REPLAY_MARGIN_SECONDS
    replay = Replay(
        store, caller.tenant, run, -1, chat.settings.sse_ping_seconds, deadline, encoder=UIMessageStream()
    )
    chat.telemetry.replay_started(caller.tenant, run_id)
    return StreamingResponse(
        replay.frames(), media_type=MEDIA_TYPE, headers={**sse_headers(run_id), **HEADERS}
    )
