"""The SSE wire format of CONTRACT.md: ``id: <seq>`` + ``data: <json>`` per event, ``: ping`` keep-alives."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from agentstream.core._aiter import Pump
from agentstream.core.events import Event, event_to_dict
from agentstream.core.runs import RunHandle

__all__ = ["PING", "EventStreamResponse", "encode_data", "encode_event", "sse_headers"]

PING = b": ping\n\n"


def encode_data(seq: int, payload: dict[str, Any]) -> bytes:
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"id: {seq}\ndata: {data}\n\n".encode()


def encode_event(seq: int, event: Event) -> bytes:
    return encode_data(seq, event_to_dict(event))


def sse_headers(run_id: str) -> dict[str, str]:
    return {
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
        "X-Run-Id": run_id,
    }


async def _body(events: Pump[tuple[int, Event]], ping_seconds: float) -> AsyncIterator[bytes]:
    while True:
        try:
            seq, event = await events.get(ping_seconds)
        except TimeoutError:
            yield PING
            continue
        except StopAsyncIteration:
            return
        yield encode_event(seq, event)


class EventStreamResponse(StreamingResponse):
    """Streams a run as SSE; when the response ends for any reason, ``on_close`` decides the run's fate."""

    media_type = "text/event-stream; charset=utf-8"

    def __init__(self, run: RunHandle, *, ping_seconds: float, on_close: Callable[[RunHandle], None]) -> None:
        self._events: Pump[tuple[int, Event]] = Pump(run.events())
        self._run = run
        self._on_close = on_close
        super().__init__(_body(self._events, ping_seconds), headers=sse_headers(run.run_id))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._events.cancel()
            self._on_close(self._run)
