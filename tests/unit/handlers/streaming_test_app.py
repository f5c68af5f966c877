"""A small ASGI app for the handler tests: an SSE stream with pauses, binary, and failing routes.

SSE events carry ``time.monotonic()`` taken when the app yields them, so tests can time their journey.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

app = FastAPI()

BINARY = bytes(range(256))


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/api/v1/agents/{agent_id}/chat/stream")
async def chat_stream(
    agent_id: str, request: Request, count: int = 5, interval: float = 0.05
) -> StreamingResponse:
    body = await request.json()
    remaining_ms = request.scope["aws.context"].get_remaining_time_in_millis()

    async def events() -> AsyncIterator[bytes]:
        start = {
            "chunk_type": "start",
            "agent_id": agent_id,
            "remaining_ms": remaining_ms,
            "t": time.monotonic(),
        }
        yield f"id: 0\ndata: {json.dumps(start)}\n\n".encode()
        for number in range(1, count + 1):
            await asyncio.sleep(interval)
            content = {"chunk_type": "content", "content": body["message"], "t": time.monotonic()}
            yield f"id: {number}\ndata: {json.dumps(content, ensure_ascii=False)}\n\n".encode()
        done = {"chunk_type": "done", "status": "completed", "t": time.monotonic()}
        yield f"id: {count + 1}\ndata: {json.dumps(done)}\n\n".encode()

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Run-Id": "run-1"}
    response = StreamingResponse(events(), media_type="text/event-stream; charset=utf-8", headers=headers)
    response.set_cookie("seen", "1")
    response.set_cookie("tenant", "default")
    return response


@app.api_route("/echo", methods=["GET", "POST"])
async def echo(request: Request) -> dict[str, Any]:
    return {
        "method": request.method,
        "path": request.url.path,
        "query": str(request.query_params),
        "body": (await request.body()).decode(),
        "authorization": request.headers.get("authorization"),
        "cookie": request.headers.get("cookie"),
    }


@app.get("/binary")
async def binary() -> Response:
    return Response(BINARY, media_type="application/octet-stream")


@app.get("/raise-before-start")
async def raise_before_start() -> None:
    raise RuntimeError("failed before the response started")


@app.get("/raise-mid-body")
async def raise_mid_body() -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        yield b"data: partial\n\n"
        raise RuntimeError("failed mid-body")

    return StreamingResponse(body(), media_type="text/event-stream")


async def raw_failing_app(scope: Any, receive: Any, send: Any) -> None:
    """A bare ASGI app that fails before it sends anything (no error middleware to answer a 500)."""
    raise LookupError("no response at all")
