"""Secrets from AWS Secrets Manager, read at run time and cached (never in templates or env values).

A read that fails (Secrets Manager unreachable, throttled, access denied, no such secret) is a
``SecretUnavailable`` (503), never a raw botocore error; the failure is remembered for a few seconds so
a burst of requests does not turn into a burst of Secrets Manager calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from agentstream.errors import SecretUnavailable

if TYPE_CHECKING:
    from pydantic import SecretStr

__all__ = ["FAILURE_TTL_SECONDS", "clear_cache", "get_secret", "key_from"]

logger = logging.getLogger(__name__)

_TTL_SECONDS = 300.0
FAILURE_TTL_SECONDS = 5.0
_cache: dict[str, tuple[float, str]] = {}
_failures: dict[str, float] = {}


def _fetch(secret_id: str) -> str:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        value = boto3.client("secretsmanager").get_secret_value(SecretId=secret_id)
        return str(value["SecretString"])
    except (BotoCoreError, ClientError, KeyError) as e:
        code = e.response.get("Error", {}).get("Code", "") if isinstance(e, ClientError) else type(e).__name__
        logger.warning("reading a secret from Secrets Manager failed (%s)", code)
        raise SecretUnavailable("a secret the service needs cannot be read now; try again later") from e


def clear_cache() -> None:
    """Forget every cached value and failure (tests; a rotation that must be seen at once)."""
    _cache.clear()
    _failures.clear()


async def get_secret(secret_id: str) -> str:
    """The secret's string value, cached for five minutes (rotation is picked up after that)."""
    hit = _cache.get(secret_id)
    if hit is not None and hit[0] > time.monotonic():
        return hit[1]
    if _failures.get(secret_id, 0.0) > time.monotonic():
        raise SecretUnavailable("a secret the service needs cannot be read now; try again later")
    try:
        value = await asyncio.to_thread(_fetch, secret_id)
    except SecretUnavailable:
        _failures[secret_id] = time.monotonic() + FAILURE_TTL_SECONDS
        raise
    _failures.pop(secret_id, None)
    _cache[secret_id] = (time.monotonic() + _TTL_SECONDS, value)
    return value


async def key_from(value: SecretStr | None, secret_id: str | None) -> str | None:
    """A key given in the environment, else the one in the named secret, else none."""
    if value is not None:
        return value.get_secret_value()
    return await get_secret(secret_id) if secret_id else None
