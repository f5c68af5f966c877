"""Bearer-token authentication: who is calling, and which tenant's records they may touch."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Request

from agentstream.config import Settings
from agentstream.errors import Unauthorized
from agentstream.secrets import get_secret

__all__ = ["DEFAULT_TENANT", "Principal", "authenticate"]

DEFAULT_TENANT = "default"


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: str
    is_admin: bool


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


async def authenticate(request: Request) -> Principal:
    """FastAPI dependency: the caller, or 401."""
    token = _bearer(request)
    settings: Settings = request.app.state.settings
    admin = await _admin_key(settings)
    if admin is not None and hmac.compare_digest(token.encode(), admin.encode()):
        return Principal(tenant=DEFAULT_TENANT, is_admin=True)
    raise Unauthorized("invalid API key")
