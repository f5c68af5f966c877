"""Secrets from AWS Secrets Manager, read at run time and cached (never in templates or env values)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import SecretStr

__all__ = ["get_secret", "key_from"]

_TTL_SECONDS = 300.0
_cache: dict[str, tuple[float, str]] = {}


def _fetch(secret_id: str) -> str:
    import boto3

    value = boto3.client("secretsmanager").get_secret_value(SecretId=secret_id)
    return str(value["SecretString"])


async def get_secret(secret_id: str) -> str:
    """The secret's string value, cached for five minutes (rotation is picked up after that)."""
    hit = _cache.get(secret_id)
    if hit is not None and hit[0] > time.monotonic():
        return hit[1]
    value = await asyncio.to_thread(_fetch, secret_id)
    _cache[secret_id] = (time.monotonic() + _TTL_SECONDS, value)
    return value


async def key_from(value: SecretStr | None, secret_id: str | None) -> str | None:
    """A key given in the environment, else the one in the named secret, else none."""
    if value is not None:
        return value.get_secret_value()
    return await get_secret(secret_id) if secret_id else None
