"""Bearer-token authentication: who is calling, and which tenant's records they may touch.

The admin key (``AGENTSTREAM_ADMIN_KEY``, or the Secrets Manager secret named by
``AGENTSTREAM_ADMIN_KEY_SECRET_ARN``) acts as the ``default`` tenant and alone manages keys. Tenant keys
are looked up in the store; a verified key is cached for ``KEY_CACHE_SECONDS`` so a stream of requests
costs one read, and a revoked key stops working on other instances within that time.

Failed lookups cost nothing when repeated: a token that is not shaped like one of our keys is refused
without a store read, and one that is but matched no key is remembered for ``MISS_CACHE_SECONDS`` in a
cache of at most ``MISS_CACHE_SIZE`` entries (the oldest go first), so random tokens can neither make
the store work nor grow this process's memory without bound. When the admin key's secret cannot be
read, tenant keys still work; any other token is answered ``503 secret_unavailable``.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from fastapi import FastAPI, Request

from agentstream.config import Settings
from agentstream.errors import SecretUnavailable, Unauthorized
from agentstream.secrets import get_secret
from agentstream.store import Store
from agentstream.store.keys import parse_key

__all__ = [
    "DEFAULT_TENANT",
    "KEY_CACHE_SECONDS",
    "MISS_CACHE_SECONDS",
    "MISS_CACHE_SIZE",
    "KeyCache",
    "Principal",
    "authenticate",
    "forget_key",
]

DEFAULT_TENANT = "default"
KEY_CACHE_SECONDS = 60.0
MISS_CACHE_SECONDS = 30.0
MISS_CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: str
    is_admin: bool
    key_id: str | None = None


@dataclass(slots=True)
class KeyCache:
    """This process's verdicts on tenant keys, by the key's SHA-256: verified keys and recent misses."""

    hits: dict[str, tuple[float, Principal]] = field(default_factory=dict)
    misses: OrderedDict[str, float] = field(default_factory=OrderedDict)

    def hit(self, digest: str) -> Principal | None:
        found = self.hits.get(digest)
        if found is None:
            return None
        if found[0] <= time.monotonic():
            del self.hits[digest]
            return None
        return found[1]

    def missed(self, digest: str) -> bool:
        until = self.misses.get(digest)
        if until is None:
            return False
        if until <= time.monotonic():
            del self.misses[digest]
            return False
        return True

    def remember_hit(self, digest: str, principal: Principal) -> None:
        self.hits[digest] = (time.monotonic() + KEY_CACHE_SECONDS, principal)

    def remember_miss(self, digest: str) -> None:
        self.misses.pop(digest, None)
        self.misses[digest] = time.monotonic() + MISS_CACHE_SECONDS
        while len(self.misses) > MISS_CACHE_SIZE:
            self.misses.popitem(last=False)

    def forget(self, key_id: str) -> None:
        for digest in [d for d, (_, p) in self.hits.items() if p.key_id == key_id]:
            del self.hits[digest]


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


def key_cache(app: FastAPI) -> KeyCache:
    """The app's key cache (made on first use)."""
    if not hasattr(app.state, "key_cache"):
        app.state.key_cache = KeyCache()
    cache: KeyCache = app.state.key_cache
    return cache


def forget_key(app: FastAPI, key_id: str) -> None:
    """Drop a revoked key from this instance's cache at once."""
    key_cache(app).forget(key_id)


async def authenticate(request: Request) -> Principal:
    """FastAPI dependency: the caller, or 401 (503 when the admin key cannot be read to compare)."""
    token = _bearer(request)
    settings: Settings = request.app.state.settings
    tenant_key = parse_key(token) is not None
    try:
        admin = await _admin_key(settings)
    except SecretUnavailable:
        if not tenant_key:
            raise
        admin = None  # a tenant key needs no admin key to be checked
    if admin is not None and hmac.compare_digest(token.encode(), admin.encode()):
        return Principal(tenant=DEFAULT_TENANT, is_admin=True)
    if not tenant_key:
        raise Unauthorized("invalid API key")
    cache = key_cache(request.app)
    digest = hashlib.sha256(token.encode()).hexdigest()
    principal = cache.hit(digest)
    if principal is not None:
        return principal
    if cache.missed(digest):
        raise Unauthorized("invalid API key")
    store: Store = request.app.state.store
    record = await store.keys.verify(token)
    if record is None:
        cache.remember_miss(digest)
        raise Unauthorized("invalid API key")
    principal = Principal(tenant=record.tenant, is_admin=False, key_id=record.id)
    cache.remember_hit(digest, principal)
    return principal
