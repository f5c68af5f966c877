"""The ASGI app, ``agentstream.app:app``: served by uvicorn locally and by the Lambda handlers in AWS.

Importing this module is the process's start-up, for uvicorn and for Lambda's init phase alike (the
Lambda handlers import it at init, where provisioned concurrency pays for it and an error reaches
``/init/error``). After building the app it does now what the first request would otherwise wait for,
then moves everything start-up made out of the garbage collector's generations (`gc.freeze`), so that
full collections no longer walk those objects mid-stream (pauses of ~150 ms were measured).
"""

from __future__ import annotations

import gc
import logging
from typing import TYPE_CHECKING

from agentstream.web.app import create_app

if TYPE_CHECKING:
    from fastapi import FastAPI

    from agentstream.store import Store

__all__ = ["app", "warm_up"]

logger = logging.getLogger(__name__)


def warm_up(app: FastAPI) -> None:
    """Create the DynamoDB client and ready the default provider now, not on the first request."""
    from botocore.exceptions import BotoCoreError

    # The provider of agents that name none; providers are otherwise imported on first use.
    from agentstream.core.providers import openai

    store: Store = app.state.store
    try:
        store.connect()
    except BotoCoreError as exc:  # e.g. no region locally: the first request reports it as before
        logger.warning("no DynamoDB client at start-up (%s); requests will try again", exc)
    openai.warm_up()


app = create_app()
warm_up(app)
gc.freeze()
