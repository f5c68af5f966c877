"""Bearer-token authentication: who is calling, and which tenant's records they may touch.

The admin key (``AGENTSTREAM_ADMIN_KEY``, or the Secrets Manager secret named by
``AGENTSTREAM_ADMIN_KEY_SECRET_ARN``) acts as the ``default`` tenant and alone manages keys. Tenant keys
are looked up in the store; a verified key is cached for ``KEY_CACHE_SECONDS`` so a stream of requests
costs one read, and a revoked key stops working on other instances within that time.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

from fastapi import FastAPI, Request

from agentstream.config import Settings
from agentstream.errors import Unauthorized
from agentstream.secrets import get_secret
from agentstream.store import Store
from agentstream.store.keys import parse_key

__all__ = ["DEFAULT_TENANT", "KEY_CACHE_SECONDS", "Principal", "authenticate", "forget_key"]

DEFAULT_TENANT = "default"
KEY_CACHE_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: str
    is_admin: bool
    key_id: str | None = None


async def _admin_key(settings: Settings) -> str | None:
    if settings.admin_key is not None:
        return settings.admin_key.get_secret_value() or None
    if settings.admin_key_secret_id:
        return await get_secret(settings.admin_key_secret_id)
    return None


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <key>'")
    return token.strip()


def _cache(app: FastAPI) -> dict[str, tuple[float, Principal]]:
    if not hasattr(app.state, "key_cache"):
        app.state.key_cache = {}
    cache: dict[str, tuple[float, Principal]] = app.state.key_cache
    return cache


def forget_key(app: FastAPI, key_id: str) -> None:
    """Drop a revoked key from this instance's cache at once."""
    cache = _cache(app)
    for digest in [d for d, (_, p) in cache.items() if p.key_id == key_id]:
        del cache[digest]


async def authenticate(request: Request) -> Principal:
    """FastAPI dependency: the caller, or 401."""
    token = _bearer(request)
    settings: Settings = request.app.state.settings
    admin = await _admin_key(settings)
    if admin is not None and hmac.compare_digest(token.encode(), admin.encode()):
        return Principal(tenant=DEFAULT_TENANT, is_admin=True)
    if parse_key(token) is None:
        raise Unauthorized("invalid API key")
    cache = _cache(request.app)
    digest = hashlib.sha256(token.encode()).hexdigest()
    hit = cache.get(digest)
    if hit is not None and hit[0] > time.monotonic():
        return hit[1]
    store: Store = request.app.state.store
    record = await store.keys.verify(token)
    if record is None:
        raise Unauthorized("invalid API key")
    principal = Principal(tenant=record.tenant, is_admin=False, key_id=record.id)
    cache[digest] = (time.monotonic() + KEY_CACHE_SECONDS, principal)
    return principal
