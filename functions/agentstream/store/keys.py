"""API keys: shown once at creation, stored only as a SHA-256 hash under a short lookup id.

A key looks like ``ask_<id>_<secret>``: the id is 12 random hex digits, the secret 43 URL-safe
characters (256 bits). Item: pk ``KEYS#{shard}``, sk ``KEY#{id}``, holding the hash, the tenant and a
name; the shard is the id's first hex digit, so the keys (and every request's key lookup) spread over
16 partitions instead of one hot ``KEYS`` partition, and listing them in id order is reading the 16
partitions one after the other. The secret is random enough that a fast hash suffices (no password
stretching), and comparing hashes in constant time keeps timing from leaking anything.

Keys written before the shards (pk ``KEYS``) keep working: a lookup reads the key's shard and the old
partition in one BatchGetItem, the listing starts with the old partition, revoking finds them there,
and ``migrate_legacy()`` (``agentstream keys migrate``) moves them into their shards.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from agentstream.errors import BadRequest, NotFound
from agentstream.store._table import ConditionFailed, Table, encode_cursor, key, now_iso
from agentstream.store.pages import Page
from agentstream.store.schema import PARTITION_KEY, SORT_KEY

__all__ = ["SHARDS", "ApiKey", "KeyRepository", "parse_key"]

LEGACY_PK = "KEYS"
_PREFIX = "ask"
# the shards, in the order of the ids they hold; the partitions a listing reads, in order
SHARDS = tuple("0123456789abcdef")
_PARTITIONS = (LEGACY_PK, *(f"KEYS#{s}" for s in SHARDS))
# the shape of every key this service ever issued: anything else is refused without a store read
_KEY_RE = re.compile(r"ask_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str  # the lookup id; safe to show and log
    tenant: str
    name: str
    created_at: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "tenant": self.tenant, "name": self.name, "created_at": self.created_at}


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _pk(key_id: str) -> str:
    return f"KEYS#{key_id[0]}"


def parse_key(token: str) -> tuple[str, str] | None:
    """(key id, whole token) if the token has the exact shape of one of our keys."""
    match = _KEY_RE.fullmatch(token)
    return (match.group(1), token) if match else None


def _decode_cursor(cursor: str) -> dict[str, Any]:
    """The cursor's last key; it must be a key item of one of the partitions a listing reads."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        last = key(str(data[PARTITION_KEY]), str(data[SORT_KEY]))
    except (ValueError, KeyError, TypeError, binascii.Error) as e:
        raise BadRequest("invalid cursor", code="invalid_cursor") from e
    if last[PARTITION_KEY]["S"] not in _PARTITIONS or not last[SORT_KEY]["S"].startswith("KEY#"):
        raise BadRequest("invalid cursor", code="invalid_cursor")
    return last


class KeyRepository:
    def __init__(self, table: Table) -> None:
        self._table = table

    async def create(self, tenant: str, name: str) -> tuple[ApiKey, str]:
        """A new key for ``tenant``: the record and the key itself (returned this once only)."""
        key_id = secrets.token_hex(6)
        token = f"{_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        record = ApiKey(id=key_id, tenant=tenant, name=name, created_at=now_iso())
        item: dict[str, Any] = {
            **key(_pk(key_id), f"KEY#{key_id}"),
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
        """The key record if ``token`` is a valid, unrevoked key (one request: its shard + the old home)."""
        parsed = parse_key(token)
        if parsed is None:
            return None
        key_id, whole = parsed
        sk = f"KEY#{key_id}"
        items = await self._table.get_batch([key(_pk(key_id), sk), key(LEGACY_PK, sk)])
        for item in items:
            if hmac.compare_digest(item["hash"]["S"], _hash(whole)):
                return _record(item)
        return None

    async def list(self, *, limit: int, cursor: str | None) -> Page[ApiKey]:
        """Keys in the order of their partitions (old ones first), then of their ids."""
        start = 0
        after: dict[str, Any] | None = None
        if cursor:
            after = _decode_cursor(cursor)
            start = _PARTITIONS.index(after[PARTITION_KEY]["S"])
        partitions = _PARTITIONS[start:]

        async def page(pk: str) -> tuple[list[dict[str, Any]], bool]:
            extra: dict[str, Any] = {}
            if after is not None and pk == partitions[0]:
                extra["ExclusiveStartKey"] = after
            items, more = await self._table.query_page(pk, "KEY#", limit=limit, **extra)
            return items, more is not None

        pages = await asyncio.gather(*(page(pk) for pk in partitions))
        items = [item for found, _ in pages for item in found]
        more = len(items) > limit or (len(items) == limit and any(m for _, m in pages))
        items = items[:limit]
        next_cursor = (
            encode_cursor(key(items[-1][PARTITION_KEY]["S"], items[-1][SORT_KEY]["S"]))
            if more and items
            else None
        )
        return Page([_record(i) for i in items], next_cursor)

    async def delete(self, key_id: str) -> None:
        sk = f"KEY#{key_id}"
        homes = [_pk(key_id), LEGACY_PK] if re.fullmatch(r"[0-9a-f]{12}", key_id) else [LEGACY_PK]
        for pk in homes:
            item_key = key(pk, sk)
            try:
                await self._table.call(
                    lambda c, k=item_key: c.delete_item(  # type: ignore[misc]
                        TableName=self._table.name, Key=k, ConditionExpression="attribute_exists(pk)"
                    )
                )
                return
            except ConditionFailed:
                continue
        raise NotFound(f"API key {key_id} not found")

    async def migrate_legacy(self) -> int:
        """Move keys from the old single ``KEYS`` partition into their shards; the number moved.

        Each key is copied (unless its shard already holds it) and then deleted from the old partition
        in one transaction, so it is never missing; running it again moves what is left.
        """
        moved = 0
        for item in await self._table.query_all(LEGACY_PK, "KEY#"):
            key_id = item[SORT_KEY]["S"].removeprefix("KEY#")
            if re.fullmatch(r"[0-9a-f]{12}", key_id) is None:
                continue  # not a key this service issued: leave it where it is
            copy = {**item, PARTITION_KEY: {"S": _pk(key_id)}}
            try:
                await self._table.call(
                    lambda c, copy=copy, item=item: c.transact_write_items(  # type: ignore[misc]
                        TransactItems=[
                            {
                                "Put": {
                                    "TableName": self._table.name,
                                    "Item": copy,
                                    "ConditionExpression": "attribute_not_exists(pk)",
                                }
                            },
                            {
                                "Delete": {
                                    "TableName": self._table.name,
                                    "Key": key(LEGACY_PK, item[SORT_KEY]["S"]),
                                    "ConditionExpression": "attribute_exists(pk)",
                                }
                            },
                        ]
                    )
                )
            except ConditionFailed:
                continue  # moved meanwhile (or revoked): nothing to do
            moved += 1
        return moved


def _record(item: dict[str, Any]) -> ApiKey:
    return ApiKey(
        id=item[SORT_KEY]["S"].removeprefix("KEY#"),
        tenant=item["tenant"]["S"],
        name=item["name"]["S"],
        created_at=item["created_at"]["S"],
    )
