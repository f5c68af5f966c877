"""Sessions and their messages (the conversation history sent back to the model).

- session: pk ``T#{tenant}#A#{agent}#U#{user}``, sk ``SESSION#{session}`` (counts, times)
- message: pk ``T#{tenant}#A#{agent}#U#{user}#S#{session}``, sk ``MSG#{epoch_ms:013d}#{run_id}#{n}``
- a message longer than one item holds its first part; the rest are items ``PART#{message sk}#{i:04d}``
  in the same partition (outside the ``MSG#`` prefix, so history queries count messages, not parts).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from agentstream.core.ports import HistoryMessage as StoredMessage
from agentstream.errors import NotFound
from agentstream.store._table import Table, epoch_seconds, key, now_iso, split_text
from agentstream.store.pages import Page
from agentstream.store.schema import SORT_KEY, TTL_ATTRIBUTE

__all__ = ["ConversationRepository", "Session", "StoredMessage"]


@dataclass(frozen=True, slots=True)
class Session:
    session_id: str
    message_count: int
    created_at: str
    updated_at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "message_count": self.message_count,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


def sessions_pk(tenant: str, agent_id: str, user_id: str) -> str:
    return f"T#{tenant}#A#{agent_id}#U#{user_id}"


def _messages_pk(tenant: str, agent_id: str, user_id: str, session_id: str) -> str:
    return f"{sessions_pk(tenant, agent_id, user_id)}#S#{session_id}"


class ConversationRepository:
    def __init__(self, table: Table, *, ttl_days: float = 0) -> None:
        self._table = table
        self._ttl_days = ttl_days

    async def _read(self, pk: str, items: list[dict[str, Any]]) -> list[StoredMessage]:
        messages = []
        for item in items:
            content = item["content"]["S"]
            if int(item.get("parts", {}).get("N", "1")) > 1:
                parts = await self._table.query_all(pk, f"PART#{item[SORT_KEY]['S']}#")
                content += "".join(p["content"]["S"] for p in parts)
            messages.append(
                StoredMessage(
                    role="user" if item["role"]["S"] == "user" else "assistant",
                    content=content,
                    run_id=item["run_id"]["S"],
                    created_at=item["created_at"]["S"],
                )
            )
        return messages

    async def recent(
        self, tenant: str, agent_id: str, user_id: str, session_id: str, *, limit: int
    ) -> list[StoredMessage]:
        """The last ``limit`` messages of a session, oldest first."""
        if limit <= 0:
            return []
        pk = _messages_pk(tenant, agent_id, user_id, session_id)
        items, _ = await self._table.query_page(pk, "MSG#", limit=limit, forward=False)
        items.reverse()
        return await self._read(pk, items)

    async def messages(
        self, tenant: str, agent_id: str, user_id: str, session_id: str, *, limit: int, cursor: str | None
    ) -> Page[StoredMessage]:
        """A session's messages, oldest first, a page at a time."""
        pk = _messages_pk(tenant, agent_id, user_id, session_id)
        items, next_cursor = await self._table.query_page(pk, "MSG#", limit=limit, cursor=cursor)
        if not items and cursor is None:
            await self.get_session(tenant, agent_id, user_id, session_id)  # 404 for an unknown session
        return Page(await self._read(pk, items), next_cursor)

    async def get_session(self, tenant: str, agent_id: str, user_id: str, session_id: str) -> Session:
        session_key = key(sessions_pk(tenant, agent_id, user_id), f"SESSION#{session_id}")
        response = await self._table.call(
            lambda c: c.get_item(TableName=self._table.name, Key=session_key, ConsistentRead=True)
        )
        item = response.get("Item")
        if item is None:
            raise NotFound(f"session {session_id} not found")
        return _session(item)

    async def sessions(
        self, tenant: str, agent_id: str, user_id: str, *, limit: int, cursor: str | None
    ) -> Page[Session]:
        items, next_cursor = await self._table.query_page(
            sessions_pk(tenant, agent_id, user_id), "SESSION#", limit=limit, cursor=cursor
        )
        return Page([_session(i) for i in items], next_cursor)

    async def delete_session(self, tenant: str, agent_id: str, user_id: str, session_id: str) -> None:
        await self.get_session(tenant, agent_id, user_id, session_id)
        pk = _messages_pk(tenant, agent_id, user_id, session_id)
        items = await self._table.query_all(pk, "", ProjectionExpression="pk, sk")
        await self._table.delete_keys([{"pk": i["pk"], "sk": i["sk"]} for i in items])
        await self._table.delete_keys([key(sessions_pk(tenant, agent_id, user_id), f"SESSION#{session_id}")])

    async def append_turn(
        self,
        tenant: str,
        agent_id: str,
        user_id: str,
        session_id: str,
        *,
        run_id: str,
        user_text: str,
        assistant_text: str,
    ) -> None:
        """Store one exchange (user message, assistant reply) and count it in its session."""
        now = now_iso()
        ms = time.time_ns() // 1_000_000
        pk = _messages_pk(tenant, agent_id, user_id, session_id)
        expiry = {TTL_ATTRIBUTE: {"N": str(epoch_seconds(self._ttl_days))}} if self._ttl_days > 0 else {}
        messages: list[dict[str, Any]] = []
        overflow: list[dict[str, Any]] = []
        for n, (role, text) in enumerate((("user", user_text), ("assistant", assistant_text))):
            sk = f"MSG#{ms:013d}#{run_id}#{n}"
            first, *rest = split_text(text)
            messages.append(
                {
                    **key(pk, sk),
                    "role": {"S": role},
                    "content": {"S": first},
                    "run_id": {"S": run_id},
                    "created_at": {"S": now},
                    "parts": {"N": str(1 + len(rest))},
                    **expiry,
                }
            )
            overflow += [
                {**key(pk, f"PART#{sk}#{i:04d}"), "content": {"S": p}, **expiry} for i, p in enumerate(rest)
            ]
        # Parts first: a message item is only visible once all of its text is stored. A batch write
        # and an update cost half the write units of one transaction over the same items; the
        # session's counter is informational, so it does not need to move atomically with them.
        await self._table.put_items(overflow)
        await self._table.put_items(messages)
        session_key = key(sessions_pk(tenant, agent_id, user_id), f"SESSION#{session_id}")
        await self._table.call(
            lambda c: c.update_item(
                TableName=self._table.name,
                Key=session_key,
                UpdateExpression="ADD message_count :two "
                "SET updated_at = :now, created_at = if_not_exists(created_at, :now)",
                ExpressionAttributeValues={":two": {"N": "2"}, ":now": {"S": now}},
            )
        )


def _session(item: dict[str, Any]) -> Session:
    return Session(
        session_id=item[SORT_KEY]["S"].removeprefix("SESSION#"),
        message_count=int(item.get("message_count", {}).get("N", "0")),
        created_at=item.get("created_at", {}).get("S", ""),
        updated_at=item.get("updated_at", {}).get("S", ""),
    )
