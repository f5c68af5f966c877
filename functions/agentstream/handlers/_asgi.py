"""A streaming ASGI cycle for Lambda HTTP events, independent of how the bytes leave Lambda.

Mangum's event handlers turn a function URL / HTTP API (payload 2.0) or API Gateway REST proxy event into
an ASGI scope and request body, and turn a status + headers (+ body) into a proxy response. Mangum's own
HTTP cycle buffers the whole body, so this module runs the app itself: `AsgiCycle.stream()` yields the
HTTP prelude (a dict) as soon as the app starts its response, then every body message as one ``bytes``
item the moment the app sends it. `AsgiCycle.buffered()` collects the same stream into the ordinary
proxy response. Which transport writes the stream to the Runtime API is someone else's business (today
the streaming-runtime layer; tomorrow perhaps a native Python streaming API).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING, Any, TypeVar, cast

from mangum.adapter import DEFAULT_TEXT_MIME_TYPES
from mangum.handlers import APIGateway, HTTPGateway

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Coroutine

    from mangum.types import ASGI, Headers, LambdaConfig, LambdaContext, LambdaEvent, LambdaHandler, Message

__all__ = ["AsgiCycle", "UnsupportedEvent", "run_on_thread_loop", "thread_event_loop"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

CONFIG: LambdaConfig = {
    "api_gateway_base_path": "/",
    "text_mime_types": list(DEFAULT_TEXT_MIME_TYPES),
    "exclude_headers": [],
}
_PRELUDE_KEYS = ("statusCode", "headers", "multiValueHeaders", "cookies")
_END = object()
# How long an app may take to finish after it was told the client is gone, before it is cancelled.
DISCONNECT_GRACE_SECONDS = 1.0
# How many messages the app may send ahead of the transport before its `send()` waits: when the
# transport stalls, the app stops with it instead of piling the rest of the reply up in memory.
MAX_QUEUED_MESSAGES = 16


class UnsupportedEvent(ValueError):
    """The event is neither a function URL / HTTP API nor an API Gateway REST proxy event."""


def event_handler(event: LambdaEvent, context: LambdaContext, config: LambdaConfig = CONFIG) -> LambdaHandler:
    """Mangum's handler for the event, tried in Mangum's own order (payload 2.0 first, then REST)."""
    for handler_class in (HTTPGateway, APIGateway):
        if handler_class.infer(event, context, config):
            handler: LambdaHandler = handler_class(event, context, config)
            return handler
    raise UnsupportedEvent("not a function URL, HTTP API or API Gateway REST proxy event")


class AsgiCycle:
    """One HTTP request through an ASGI app. Use either `stream()` or `buffered()`, once."""

    def __init__(self, app: ASGI, event: LambdaEvent, context: LambdaContext) -> None:
        self.app = app
        self.handler = event_handler(event, context)
        self.status: int | None = None
        self.headers: Headers = []
        self.complete = False

    async def stream(self) -> AsyncIterator[dict[str, Any] | bytes]:
        """The prelude dict, then each non-empty body message as bytes, as the app sends them.

        An exception the app raises before its response starts comes out of this iterator before the
        prelude; one raised mid-body comes out after the bytes sent so far; one raised after a complete
        response is only logged (the client has its answer). `receive()` gives the request body, then
        ``http.disconnect`` once the response is complete or this iterator is closed.

        The app's `send()` waits while `MAX_QUEUED_MESSAGES` are not yet taken from this iterator. Once
        the iterator is closed early, nobody reads any more: `send()` drops what it is given and returns
        at once, so the app can notice the disconnect and end on its own.
        """
        scope = self.handler.scope
        body = self.handler.body
        queue: asyncio.Queue[object] = asyncio.Queue(MAX_QUEUED_MESSAGES)
        finished = asyncio.Event()
        request_sent = False
        abandoned = False

        async def deliver(item: object) -> None:
            if not abandoned:
                await queue.put(item)
            else:
                await asyncio.sleep(0)  # an app that only ever sends must still let its cancellation in

        async def receive() -> Message:
            nonlocal request_sent
            if not request_sent:
                request_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await finished.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start" and self.status is None:
                self.status = int(message["status"])
                self.headers = [[bytes(k), bytes(v)] for k, v in message.get("headers", [])]
                await deliver(self.prelude())
            elif kind == "http.response.body" and self.status is not None and not self.complete:
                if chunk := bytes(message.get("body", b"")):
                    await deliver(chunk)
                if not message.get("more_body", False):
                    self.complete = True
                    finished.set()
            else:
                raise RuntimeError(f"unexpected ASGI message {kind!r} in this state of the response")

        async def run() -> None:
            try:
                await self.app(scope, receive, send)
            finally:
                await deliver(_END)

        task = asyncio.create_task(run())
        try:
            while (item := await queue.get()) is not _END:
                yield cast("dict[str, Any] | bytes", item)
            try:
                await task
            except Exception:
                if not self.complete:
                    raise
                logger.exception("the app raised after its response was complete")
            if self.status is None:
                raise RuntimeError("the app returned without starting a response")
        finally:
            finished.set()
            if not task.done():
                # Closed early (the transport gave up): the app sees http.disconnect and gets a moment
                # to wind down on its own before it is cancelled. Emptying the queue wakes a send()
                # that waits for room; later sends are dropped.
                abandoned = True
                while not queue.empty():
                    queue.get_nowait()
                await asyncio.wait({task}, timeout=DISCONNECT_GRACE_SECONDS)
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
                except Exception:
                    logger.exception("the app failed after its response was abandoned")

    async def buffered(self) -> dict[str, Any]:
        """The whole response as Mangum builds it for this event source (base64 when binary)."""
        chunks = [item async for item in self.stream() if isinstance(item, bytes)]
        assert self.status is not None
        return self.handler({"status": self.status, "headers": self.headers, "body": b"".join(chunks)})

    def prelude(self) -> dict[str, Any]:
        """Status, headers and cookies in the shape of this event source's proxy response.

        Built by Mangum's own response code on an empty body, so headers, cookies and multi-value
        headers come out exactly as in a buffered response (REST keeps ``multiValueHeaders``).
        """
        assert self.status is not None
        response = self.handler({"status": self.status, "headers": self.headers, "body": b""})
        prelude = {key: response[key] for key in _PRELUDE_KEYS if key in response}
        prelude.setdefault("headers", {})
        prelude.setdefault("cookies", [])
        return prelude


_thread_state = threading.local()


def thread_event_loop() -> asyncio.AbstractEventLoop:
    """This thread's long-lived event loop, set as its current loop.

    Buffered invocations on one thread share a loop, so loop-bound clients an app caches between
    invocations keep working, and Mangum (which asks asyncio for the current loop) finds it without
    relying on the implicit loop creation deprecated since Python 3.12.
    """
    loop: asyncio.AbstractEventLoop | None = getattr(_thread_state, "loop", None)
    if loop is None or loop.is_closed():
        loop = _thread_state.loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop


def run_on_thread_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    return thread_event_loop().run_until_complete(coroutine)
