"""The response-streaming Lambda entry point: ``agentstream.handlers.stream.handler``.

For the function URL (``InvokeMode: RESPONSE_STREAM``) and API Gateway REST (``ResponseTransferMode:
STREAM``). Under the streaming-runtime layer the context says ``response_streaming`` and the handler
returns an async iterator (prelude dict, then body bytes as the app sends them); the layer writes it to
the Runtime API as it comes. Called as a plain handler (the managed runtime without the layer, ``sam
local invoke``, or ``AGENTSTREAM_INVOKE_MODE=buffered``) it returns the ordinary proxy response with the
whole body.

The app is imported with this module, so in Lambda's init phase: provisioned concurrency pays for it, the
first invocation does not wait for it, and an app that cannot start fails the init (``/init/error``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentstream.app import app
from agentstream.config import get_settings
from agentstream.handlers._asgi import AsgiCycle, run_on_thread_loop
from agentstream.telemetry.logs import bind_request_id

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from mangum.types import ASGI, LambdaContext, LambdaEvent

    from agentstream.config import InvokeMode

    StreamHandler = Callable[
        [LambdaEvent, LambdaContext], dict[str, Any] | AsyncIterator[dict[str, Any] | bytes]
    ]

__all__ = ["handler", "invoke_mode", "make_handler"]


def invoke_mode(context: object) -> InvokeMode:
    """``AGENTSTREAM_INVOKE_MODE`` if set; else buffered under ``sam local``; else what the runtime offers."""
    settings = get_settings()
    if settings.invoke_mode is not None:
        return settings.invoke_mode
    if settings.sam_local:
        return "buffered"
    return "response_stream" if getattr(context, "response_streaming", False) is True else "buffered"


def make_handler(app: ASGI) -> StreamHandler:
    """A Lambda handler serving ``app``, streamed or buffered as `invoke_mode` decides per invocation."""

    def handle(
        event: LambdaEvent, context: LambdaContext
    ) -> dict[str, Any] | AsyncIterator[dict[str, Any] | bytes]:
        # the log lines' function_request_id when no streaming-runtime layer tells it (buffered calls)
        bind_request_id(getattr(context, "aws_request_id", None))
        cycle = AsgiCycle(app, event, context)
        if invoke_mode(context) == "response_stream":
            return cycle.stream()
        return run_on_thread_loop(cycle.buffered())

    return handle


# The Lambda entry point for ``agentstream.app:app``.
handler: StreamHandler = make_handler(app)
