"""The buffered Lambda entry point: ``agentstream.handlers.api.handler`` = ``Mangum(app)``.

For API Gateway HTTP API and ``sam local start-api``, which cannot stream. Run it on the managed Python
runtime as is (it does not need the streaming-runtime layer).
"""

from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING, Any

from mangum import Mangum

from agentstream.handlers._asgi import thread_event_loop

if TYPE_CHECKING:
    from mangum.types import ASGI, LambdaContext, LambdaEvent

__all__ = ["handler"]


@functools.cache
def _mangum() -> Mangum:
    # The app is imported on the first invocation (cold-start cost is paid once, where it shows).
    # Lifespan is off, as in the streaming handler: the app initialises what it needs lazily.
    app: ASGI = importlib.import_module("agentstream.app").app
    return Mangum(app, lifespan="off")


def handler(event: LambdaEvent, context: LambdaContext) -> dict[str, Any]:
    thread_event_loop()  # Mangum runs the app on the thread's current loop: make sure there is one
    return _mangum()(event, context)
