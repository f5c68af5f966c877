"""API keys: shown once at creation, stored only as a SHA-256 hash under a short lookup prefix.

A key looks like ``ask_<prefix>_<secret>``. Item: pk ``KEYS``, sk ``KEY#{prefix}``, holding the hash,
the tenant and a name. The secret has 256 bits of randomness, so a fast hash is enough (no password
stretching needed), and comparing hashes in constant time keeps timing from leaking anything.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from agentstream.errors import NotFound
from agentstream.store._table import ConditionFailed, Table, key, now_iso
from agentstream.store.pages import Page
from agentstream.store.schema import SORT_KEY

__all__ = ["ApiKey", "KeyRepository", "parse_key"]

_PK = "KEYS"
_PREFIX = "ask"


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str  # the lookup prefix; safe to show and log
    tenant: str
    name: str
    created_at: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "tenant": self.tenant, "name": self.name, "created_at": self.created_at}


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_key(token: str) -> tuple[str, str] | None:
    """(key id, whole token) if the token has the shape of one of our keys."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != _PREFIX or not parts[1].isalnum() or not parts[2]:
        return None
    return parts[1], token


class KeyRepository:
    def __init__(self, table: Table) -> None:
        self._table = table

    async def create(self, tenant: str, name: str) -> tuple[ApiKey, str]:
        """A new key for ``tenant``: the record and the key itself (returned this once only)."""
        key_id = secrets.token_hex(6)
        token = f"{_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        record = ApiKey(id=key_id, tenant=tenant, name=name, created_at=now_iso())
        item: dict[str, Any] = {
            **key(_PK, f"KEY#{key_id}"),
            "hash": {"S": _hash(token)},
            "tenant": {"S": tenant},
            "name": {"S": name},
            "created_at": {"S": record.created_at},
        }
        await self._table.call(
            lambda c: c.put_item(
                TableName=self._table.name, Item=item, ConditionExpression="attribute_not_exists(pk)"
            )
        )
        return record, token

    async def verify(self, token: str) -> ApiKey | None:
        """The key record if ``token`` is a valid, unrevoked key."""
        parsed = parse_key(token)
        if parsed is None:
            return None
        key_id, whole = parsed
        response = await self._table.call(
            lambda c: c.get_item(TableName=self._table.name, Key=key(_PK, f"KEY#{key_id}"))
        )
        item = response.get("Item")
        if item is None or not hmac.compare_digest(item["hash"]["S"], _hash(whole)):
            return None
        return _record(item)

    async def list(self, *, limit: int, cursor: str | None) -> Page[ApiKey]:
        items, next_cursor = await self._table.query_page(_PK, "KEY#", limit=limit, cursor=cursor)
        return Page([_record(i) for i in items], next_cursor)

    async def delete(self, key_id: str) -> None:
        try:
            await self._table.call(
                lambda c: c.delete_item(
                    TableName=self._table.name,
                    Key=key(_PK, f"KEY#{key_id}"),
                    ConditionExpression="attribute_exists(pk)",
                )
            )
        except ConditionFailed as e:
            raise NotFound(f"API key {key_id} not found") from e


def _record(item: dict[str, Any]) -> ApiKey:
    return ApiKey(
        id=item[SORT_KEY]["S"].removeprefix("KEY#"),
        tenant=item["tenant"]["S"],
        name=item["name"]["S"],
        created_at=item["created_at"]["S"],
    )
