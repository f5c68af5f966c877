"""Long-term memory: facts an agent keeps about a user, across sessions and cold starts.

Items live beside the user's sessions: pk ``T#{tenant}#A#{agent}#U#{user}``, sk ``MEM#{memory_id}``.
Sizes are bounded (``MAX_ITEMS`` per user, ``MAX_CHARS`` per item); an optional TTL expires items.
"""

from __future__ import annotations

from typing import Any

from agentstream.core.ids import new_id
from agentstream.core.ports import MemoryItem
from agentstream.errors import BadRequest, Conflict, NotFound
from agentstream.store._table import ConditionFailed, Table, epoch_seconds, key, now_iso
from agentstream.store.conversations import sessions_pk
from agentstream.store.schema import SORT_KEY, TTL_ATTRIBUTE

__all__ = ["MAX_CHARS", "MAX_ITEMS", "MemoryItem", "MemoryRepository"]

MAX_ITEMS = 200
MAX_CHARS = 2_000


class MemoryRepository:
    def __init__(self, table: Table) -> None:
        self._table = table

    async def list(self, tenant: str, agent_id: str, user_id: str) -> list[MemoryItem]:
        """Every item held for the user, oldest first (at most ``MAX_ITEMS``)."""
        items = await self._table.query_all(
            sessions_pk(tenant, agent_id, user_id), "MEM#", ConsistentRead=True
        )
        now = epoch_seconds(0)
        return [
            _memory(i)
            for i in items
            if TTL_ATTRIBUTE not in i or int(i[TTL_ATTRIBUTE]["N"]) > now  # TTL deletion lags up to days
        ]

    async def count(self, tenant: str, agent_id: str, user_id: str) -> int:
        return len(await self.list(tenant, agent_id, user_id))

    async def add(
        self, tenant: str, agent_id: str, user_id: str, content: str, *, ttl_days: float | None = None
    ) -> MemoryItem:
        content = content.strip()
        if not content:
            raise BadRequest("a memory needs some content")
        if len(content) > MAX_CHARS:
            raise BadRequest(f"a memory holds at most {MAX_CHARS} characters")
        existing = await self.list(tenant, agent_id, user_id)
        same = next((m for m in existing if m.content == content), None)
        if same is not None:
            return same
        if len(existing) >= MAX_ITEMS:
            raise Conflict(f"this user already has {MAX_ITEMS} memories; delete some first")
        item = MemoryItem(
            id=new_id("mem"),
            content=content,
            created_at=now_iso(),
            expires_at=epoch_seconds(ttl_days) if ttl_days else None,
        )
        record: dict[str, Any] = {
            **key(sessions_pk(tenant, agent_id, user_id), f"MEM#{item.id}"),
            "content": {"S": item.content},
            "created_at": {"S": item.created_at},
        }
        if item.expires_at is not None:
            record[TTL_ATTRIBUTE] = {"N": str(item.expires_at)}
        await self._table.call(
            lambda c: c.put_item(
                TableName=self._table.name, Item=record, ConditionExpression="attribute_not_exists(pk)"
            )
        )
        return item

    async def delete(self, tenant: str, agent_id: str, user_id: str, memory_id: str) -> None:
        try:
            await self._table.call(
                lambda c: c.delete_item(
                    TableName=self._table.name,
                    Key=key(sessions_pk(tenant, agent_id, user_id), f"MEM#{memory_id}"),
                    ConditionExpression="attribute_exists(pk)",
                )
            )
        except ConditionFailed as e:
            raise NotFound(f"memory {memory_id} not found") from e

    async def delete_all(self, tenant: str, agent_id: str, user_id: str) -> int:
        pk = sessions_pk(tenant, agent_id, user_id)
        items = await self._table.query_all(pk, "MEM#", ProjectionExpression="pk, sk")
        await self._table.delete_keys([{"pk": i["pk"], "sk": i["sk"]} for i in items])
        return len(items)


def _memory(item: dict[str, Any]) -> MemoryItem:
    expires = item.get(TTL_ATTRIBUTE, {}).get("N")
    return MemoryItem(
        id=item[SORT_KEY]["S"].removeprefix("MEM#"),
        content=item["content"]["S"],
        created_at=item["created_at"]["S"],
        expires_at=int(expires) if expires else None,
    )
