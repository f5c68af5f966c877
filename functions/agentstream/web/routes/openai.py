"""OpenAI-compatible routes: ``GET /v1/models`` (the caller's agents) and ``POST /v1/chat/completions``.

The wire format lives in ``web/openai.py``; errors on these paths take OpenAI's shape (``web/app.py``).
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from starlette.background import BackgroundTask
from starlette.responses import Response

from agentstream.core.agents import Agent
from agentstream.core.events import Done, Error
from agentstream.core.ids import NAME_PATTERN
from agentstream.core.runs import RunHandle
from agentstream.core.service import ChatInput
from agentstream.errors import AgentStreamError, BadRequest, NotFound
from agentstream.store import Store
from agentstream.web.deps import Caller, Chat, StoreDep, invocation_deadline
from agentstream.web.models import ChatCompletionOut, ModelList, openai_errors, sse_event
from agentstream.web.openai import (
    ChatCompletionChunks,
    ChatCompletionRequest,
    completion,
    error_body,
    error_status,
    run_failure,
)
from agentstream.web.sse import MEDIA_TYPE, EventStreamResponse, closing

router = APIRouter(prefix="/v1", tags=["openai"])

_PAGE = 100


async def _agents(store: Store, tenant: str) -> list[Agent]:
    agents: list[Agent] = []
    cursor = None
    while True:
        page = await store.agents.list(tenant, limit=_PAGE, cursor=cursor)
        agents += page.items
        if page.next_cursor is None:
            return agents
        cursor = page.next_cursor


def _epoch(iso: str) -> int:
    try:
        return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


@router.get(
    "/models", response_model=None, responses={200: {"model": ModelList}, **openai_errors(401, 413, 503)}
)
async def list_models(caller: Caller, store: StoreDep) -> dict[str, Any]:
    """The caller's agents, as models."""
    data = [
        {"id": a.id, "object": "model", "created": _epoch(a.created_at), "owned_by": "agentstream"}
        for a in await _agents(store, caller.tenant)
    ]
    return {"object": "list", "data": data}


async def _agent_named(store: Store, tenant: str, name: str) -> str:
    ids = [a.id for a in await _agents(store, tenant) if a.name == name]
    if not ids:
        raise NotFound(
            f"the model {name!r} is none of your agents (GET /v1/models lists them)", code="model_not_found"
        )
    if len(ids) > 1:
        raise BadRequest(
            f"{len(ids)} agents are named {name!r}; name the model by agent id", code="ambiguous_model"
        )
    return ids[0]


async def _start(
    model: str, chat_input: ChatInput, caller: Caller, chat: Chat, store: Store, request: Request
) -> RunHandle:
    """Start the agent named by ``model``: its id (tried first when it looks like one), or its name."""
    started = time.monotonic()

    async def start(agent_id: str) -> RunHandle:
        deadline = invocation_deadline(request)
        return await chat.start(
            caller.tenant, agent_id, chat_input, invocation_deadline=deadline, started=started
        )

    if model.startswith("agt_"):
        try:
            return await start(model)
        except NotFound:
            pass  # not an id after all: perhaps a name
    return await start(await _agent_named(store, caller.tenant, model))


_COMPLETIONS_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "model": ChatCompletionOut,
        "description": "a chat.completion, or with stream: true chat.completion.chunk Server-Sent Events",
        "content": {MEDIA_TYPE: {"schema": sse_event()}},
    },
    **openai_errors(400, 401, 404, 409, 413, 422, 429, 502, 503, 504),
}


@router.post("/chat/completions", response_model=None, responses=_COMPLETIONS_DOC)
async def chat_completions(
    body: ChatCompletionRequest,
    caller: Caller,
    chat: Chat,
    store: StoreDep,
    request: Request,
    x_session_id: Annotated[
        str | None, Header(pattern=NAME_PATTERN.pattern, description="store the turn in this session")
    ] = None,
) -> Response:
    chat_input = body.to_input(x_session_id)
    run = await _start(body.model, chat_input, caller, chat, store, request)
    completion_id = f"chatcmpl-{run.run_id}"
    if body.stream:
        encode = ChatCompletionChunks(
            completion_id,
            body.model,
            [t.name for t in chat_input.client_tools],
            include_usage=body.include_usage,
        )
        return EventStreamResponse(
            run,
            ping_seconds=chat.settings.sse_ping_seconds,
            send_timeout=chat.settings.send_timeout_seconds,
            on_close=closing("cancel"),
            encode=encode,
        )
    error: Error | None = None
    done: Done | None = None
    try:
        async for _, event in run.events():
            if isinstance(event, Error):
                error = event
            elif isinstance(event, Done):
                done = event
    finally:
        if not run.ended:  # the client went away: stop the run like a stream would
            run.stop()
    if done is None:
        raise AgentStreamError("the run ended without a result")
    headers = {"X-Run-Id": run.run_id}
    # the answer goes out first; the run's last writes finish before the invocation does
    background = BackgroundTask(run.wait)
    if done.status != "completed":
        code, message = run_failure(done, error)
        status = error_status(code)
        if done.status == "cancelled":
            headers["x-should-retry"] = "false"  # OpenAI's SDKs retry 409; a cancelled run stays so
        if error is not None and error.retry_after is not None and error.retry_after > 0:
            headers["Retry-After"] = str(math.ceil(error.retry_after))
        return JSONResponse(error_body(status, code, message), status, headers, background=background)
    return JSONResponse(completion(completion_id, body.model, done), headers=headers, background=background)
