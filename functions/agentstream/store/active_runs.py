"""Which run a chat is running: pk ``T#{tenant}#A#{agent}#C#{session}``, sk ``ACTIVE``.

A client that knows its chat (session) but not the run id (the AI SDK's resume request,
``GET .../chat/ui/{chat_id}/stream``) finds the run here. The pointer is written beside the run
record when the run starts (same round trip) and expires with the run; a reader checks the run's own
record to see whether it is still running, so the pointer is never cleared.
"""

from __future__ import annotations

from typing import Any

from agentstream.store._table import Table, key
from agentstream.store.schema import TTL_ATTRIBUTE

__all__ = ["ActiveRunRepository"]

# kept a while past the run's end, so that a reader finds the run (and sees it ended) rather than nothing
_KEEP_SECONDS = 3600


def _key(tenant: str, agent_id: str, session_id: str) -> dict[str, Any]:
    return key(f"T#{tenant}#A#{agent_id}#C#{session_id}", "ACTIVE")


class ActiveRunRepository:
    def __init__(self, table: Table) -> None:
        self._table = table

    async def put(self, tenant: str, agent_id: str, session_id: str, run_id: str, *, until_ms: int) -> None:
        item = {
            **_key(tenant, agent_id, session_id),
            "run_id": {"S": run_id},
            TTL_ATTRIBUTE: {"N": str(until_ms // 1000 + _KEEP_SECONDS)},
        }
        await self._table.call(lambda c: c.put_item(TableName=self._table.name, Item=item))

    async def get(self, tenant: str, agent_id: str, session_id: str) -> str | None:
        response = await self._table.call(
            lambda c: c.get_item(
                TableName=self._table.name,
                Key=_key(tenant, agent_id, session_id),
                ConsistentRead=True,  # asked for right after the run started (a reload mid-answer)
                ProjectionExpression="run_id",
            )
        )
        item = response.get("Item")
        return None if item is None else str(item["run_id"]["S"])
