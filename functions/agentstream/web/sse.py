"""The SSE wire format of CONTRACT.md: ``id: <seq>`` + ``data: <json>`` per event, ``: ping`` keep-alives."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from agentstream.core._aiter import Puller
from agentstream.core.events import Done, Error, Event, Metadata, Start, TextDelta, ToolCall, ToolResult
from agentstream.core.runs import RunHandle

__all__ = ["PING", "EventStreamResponse", "encode_event", "event_payload", "sse_headers"]

PING = b": ping\n\n"


def event_payload(event: Event) -> dict[str, Any]:
    """The JSON object of one event (the seed's ``chunk_type`` vocabulary plus ``tool_result``)."""
    match event:
        case TextDelta(text=text):
            return {"chunk_type": "content", "content": text}
        case Start():
            return {
                "chunk_type": "start",
                "message": event.message,
                "run_id": event.run_id,
                "agent_id": event.agent_id,
                "session_id": event.session_id,
            }
        case ToolCall():
            return {
                "chunk_type": "tool_call",
                "tool_call_id": event.id,
                "tool_name": event.name,
                "arguments": event.arguments,
            }
        case ToolResult():
            return {
                "chunk_type": "tool_result",
                "tool_call_id": event.id,
                "tool_name": event.name,
                "content": event.content,
                "is_error": event.is_error,
            }
        case Metadata(data=data):
            return {"chunk_type": "metadata", "data": data}
        case Error():
            return {"chunk_type": "error", "content": event.message, "code": event.code}
        case Done():
            return {
                "chunk_type": "done",
                "status": event.status,
                "final_response": event.final_response,
                "total_steps": event.total_steps,
                "memories_updated": event.memories_updated,
                "memories_count": event.memories_count,
                "usage": event.usage.to_dict(),
                "metrics": event.metrics,
            }
    raise TypeError(f"not an event: {event!r}")


def encode_event(seq: int, event: Event) -> bytes:
    data = json.dumps(event_payload(event), ensure_ascii=False, separators=(",", ":"))
    return f"id: {seq}\ndata: {data}\n\n".encode()


def sse_headers(run_id: str) -> dict[str, str]:
    return {
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
        "X-Run-Id": run_id,
    }


async def _body(events: Puller[tuple[int, Event]], ping_seconds: float) -> AsyncIterator[bytes]:
    while True:
        try:
            seq, event = await events.pull(ping_seconds)
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
        self._events: Puller[tuple[int, Event]] = Puller(run.events())
        self._run = run
        self._on_close = on_close
        super().__init__(_body(self._events, ping_seconds), headers=sse_headers(run.run_id))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._events.cancel()
            self._on_close(self._run)
