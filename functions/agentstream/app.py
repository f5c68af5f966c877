"""The ASGI app, ``agentstream.app:app``: served by uvicorn locally and by the Lambda handlers in AWS.

Importing this module is the process's start-up, for uvicorn and for Lambda's init phase alike (the
Lambda handlers import it at init, where provisioned concurrency pays for it and an error reaches
``/init/error``). After building the app it does now what the first request would otherwise wait for,
then moves everything start-up made out of the garbage collector's generations (`gc.freeze`), so that
full collections no longer walk those objects mid-stream (pauses of ~150 ms were measured).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

from agentstream.config import get_settings
from agentstream.telemetry import configure_logging
from agentstream.web.app import create_app

if TYPE_CHECKING:
    from fastapi import FastAPI

    from agentstream.config import Settings
    from agentstream.store import Store

__all__ = ["app", "warm_up"]

logger = logging.getLogger(__name__)


def warm_up(app: FastAPI) -> None:
    """Create the DynamoDB client and ready the default provider now, not on the first request."""
    from botocore.exceptions import BotoCoreError, ClientError

    # The provider of agents that name none, and the demo one; others are imported on first use.
    from agentstream.core.providers import openai, scripted  # noqa: F401

    store: Store = app.state.store
    settings: Settings = app.state.settings
    try:
        # In Lambda the connection is opened too (init is billed once and pre-paid by provisioned
        # concurrency); locally nothing goes on the network at import.
        store.connect(open_connection=settings.lambda_runtime_api is not None)
    except (BotoCoreError, ClientError) as exc:  # e.g. no region: the first request reports it as before
        logger.warning("no DynamoDB connection at start-up (%s); requests will try again", exc)
    openai.warm_up()
    _exercise_routes(app)


def _exercise_routes(app: FastAPI) -> None:
    """One unauthenticated request to every route, in-process: FastAPI works out a route's
    dependencies and body model on its first request (~20-30 ms for the chat route), which would
    otherwise be the first user's wait. Each answers 401 (or, unauthenticated routes, as usual) with no
    I/O: authentication fails before any store call."""
    from fastapi.routing import APIRoute

    async def call(method: str, path: str) -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"content-type", b"application/json"), (b"host", b"warm-up")],
            "server": ("warm-up", 80),
            "client": ("127.0.0.1", 0),
        }
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            return None

        await app(scope, receive, send)

    loop = asyncio.new_event_loop()
    try:
        for route in app.routes:
            if isinstance(route, APIRoute):
                path = re.sub(r"{[^}]+}", "warm-up", route.path)
                for method in sorted(route.methods or ()):
                    loop.run_until_complete(call(method, path))
    finally:
        loop.close()


configure_logging(get_settings())
app = create_app()
warm_up(app)
gc.freeze()
