"""The buffered Lambda entry point: ``agentstream.handlers.api.handler`` = ``Mangum(app)``.

For API Gateway HTTP API and ``sam local start-api``, which cannot stream. Run it on the managed Python
runtime as is (it does not need the streaming-runtime layer). Like the streaming handler, it imports the
app with this module, in Lambda's init phase.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mangum import Mangum

from agentstream.app import app
from agentstream.handlers._asgi import thread_event_loop
from agentstream.telemetry.logs import bind_request_id

if TYPE_CHECKING:
    from collections.abc import Callable

    from mangum.types import ASGI, LambdaContext, LambdaEvent

__all__ = ["handler", "make_handler"]


def make_handler(app: ASGI) -> Callable[[LambdaEvent, LambdaContext], dict[str, Any]]:
    """A buffered Lambda handler serving ``app`` through Mangum."""

    def handle(event: LambdaEvent, context: LambdaContext) -> dict[str, Any]:
        # Mangum runs the app on the thread's current loop (and asks for one when it is made, so it is
        # made here, not at import): make sure there is one. Lifespan is off, as in the streaming
        # handler: the app initialises what it needs itself.
        thread_event_loop()
        bind_request_id(getattr(context, "aws_request_id", None))  # the log lines' function_request_id
        return Mangum(app, lifespan="off")(event, context)

    return handle


handler = make_handler(app)
