"""The SSE wire format of CONTRACT.md (``id: <seq>`` + ``data: <json>`` per event, ``: ping`` keep-alives)
and the ASGI response that streams a run in it.

``EventStreamResponse`` is a plain ASGI callable, not a ``StreamingResponse``: per write it does what
the transport needs and nothing more. It takes every event the run has ready in one call and writes
them as one body message (a burst of events is one write). One repeating timer per response is its
clock: it sends a ping after ``ping_seconds`` of silence and drops a client whose socket has not
taken a write for ``send_timeout`` seconds (a reader that stopped reading must not hold the run).
A task watches ``receive()`` for the client going away (visible under uvicorn; never in Lambda).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from agentstream.core.runs import Item, RunHandle

__all__ = [
    "MEDIA_TYPE",
    "PING",
    "EventStreamResponse",
    "closing",
    "encode_data",
    "encode_items",
    "sse_headers",
]

logger = logging.getLogger(__name__)

PING = b": ping\n\n"
MEDIA_TYPE = "text/event-stream; charset=utf-8"
# How often the response's clock looks at the time (pings and the send timeout are checked on it).
_TICK_SECONDS = 1.0


def encode_data(seq: int, payload: dict[str, Any]) -> bytes:
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"id: {seq}\ndata: {data}\n\n".encode()


def encode_items(items: list[Item]) -> bytes:
    """SSE frames of ready events, as one body (the JSON was made once, by the run)."""
    return "".join([f"id: {seq}\ndata: {data}\n\n" for seq, _, data in items]).encode()


def sse_headers(run_id: str) -> dict[str, str]:
    return {
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
        "X-Run-Id": run_id,
    }


def closing(on_disconnect: str) -> Callable[[RunHandle], None]:
    """``on_close`` of a response whose client may leave: the run goes on unread, or is stopped."""

    def close(run: RunHandle) -> None:
        if run.finished:
            return
        run.detach()
        if on_disconnect == "cancel":
            run.stop()

    return close


class EventStreamResponse(Response):
    """Streams a run as SSE; when the response ends for any reason, ``on_close`` decides the run's fate.

    A ``Response`` only so that FastAPI passes it through; it keeps none of ``Response``'s machinery.
    """

    media_type = MEDIA_TYPE

    def __init__(
        self,
        run: RunHandle,
        *,
        ping_seconds: float,
        send_timeout: float,
        on_close: Callable[[RunHandle], None],
        encode: Callable[[list[Item]], bytes] = encode_items,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.run = run
        self.status_code = 200
        self.background = None
        self._ping_seconds = ping_seconds
        self._send_timeout = send_timeout
        self._on_close = on_close
        self._encode = encode
        all_headers = {"content-type": self.media_type, **sse_headers(run.run_id), **(headers or {})}
        self.raw_headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in all_headers.items()
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        run = self.run
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        last_write = loop.time()
        sending_since: float | None = None
        stalled = False
        gone = False
        timer: asyncio.TimerHandle | None = None

        def tick() -> None:
            nonlocal timer, stalled
            now = loop.time()
            if sending_since is not None and now - sending_since > self._send_timeout:
                stalled = True
                task.cancel()
                return
            if sending_since is None and now - last_write >= self._ping_seconds:
                run.wake()
            timer = loop.call_later(min(_TICK_SECONDS, self._ping_seconds), tick)

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            self._on_close(run)  # detaches: the reading loop below ends at once

        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        watcher = loop.create_task(watch())
        timer = loop.call_later(min(_TICK_SECONDS, self._ping_seconds), tick)
        try:
            while (items := await run.take()) is not None:
                if items:
                    body = self._encode(items)
                elif loop.time() - last_write >= self._ping_seconds:
                    body = PING
                else:
                    continue
                sending_since = loop.time()
                await send({"type": "http.response.body", "body": body, "more_body": True})
                last_write = loop.time()
                sending_since = None
            if not gone:
                # Done is out; the run's last writes finish before the response does, so that a Lambda
                # invocation (which ends with the response) is not frozen in the middle of them.
                await run.wait()
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not stalled:
                raise
            task.uncancel()
            logger.warning(
                "run %s: the client took nothing for %.0f s; dropped", run.run_id, self._send_timeout
            )
        finally:
            if timer is not None:
                timer.cancel()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            self._on_close(run)
