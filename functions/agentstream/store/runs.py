"""Runs and their events, kept so a client can read a run's result and replay its stream.

- run:    pk ``T#{tenant}#R#{run_id}``, sk ``RUN`` (status, agent, session, times, usage, metrics)
- events: same pk, sk ``EV#{first_seq:010d}#{part:03d}``: a batch of events as one JSON string
  (``[[seq, event], ...]``), split over several items when it would not fit in one (400 KB limit).
Every item of a run carries ``expires_at`` (TTL), so runs clean themselves up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from agentstream.errors import Conflict, NotFound
from agentstream.store._table import ConditionFailed, Table, epoch_seconds, key, now_iso, split_text
from agentstream.store.schema import SORT_KEY, TTL_ATTRIBUTE

__all__ = ["RunRecord", "RunRepository"]


@dataclass(slots=True)
class RunRecord:
    run_id: str
    agent_id: str
    session_id: str
    user_id: str
    status: str = "running"
    created_at: str = field(default_factory=now_iso)
    updated_at: str = ""
    ended_at: str | None = None
    last_seq: int = -1
    cancel_requested: bool = False
    usage: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "agent_id": self.agent_id,
            "session_id": self.session_id,
            "user_id": self.user_id,
            "status": self.status,
            "created_at": self.created_at,
            "updated_at": self.updated_at or self.created_at,
            "ended_at": self.ended_at,
            "events": self.last_seq + 1,
            "cancel_requested": self.cancel_requested,
            "usage": self.usage,
            "metrics": self.metrics,
        }


def _pk(tenant: str, run_id: str) -> str:
    return f"T#{tenant}#R#{run_id}"


class RunRepository:
    def __init__(self, table: Table, *, ttl_days: float = 30) -> None:
        self._table = table
        self._ttl_days = ttl_days

    def _expiry(self) -> dict[str, Any]:
        return {TTL_ATTRIBUTE: {"N": str(epoch_seconds(self._ttl_days))}}

    async def create(self, tenant: str, run: RunRecord) -> None:
        item: dict[str, Any] = {
            **key(_pk(tenant, run.run_id), "RUN"),
            "agent_id": {"S": run.agent_id},
            "session_id": {"S": run.session_id},
            "user_id": {"S": run.user_id},
            "status": {"S": run.status},
            "created_at": {"S": run.created_at},
            "updated_at": {"S": run.created_at},
            "last_seq": {"N": "-1"},
            **self._expiry(),
        }
        await self._table.call(
            lambda c: c.put_item(
                TableName=self._table.name, Item=item, ConditionExpression="attribute_not_exists(pk)"
            )
        )

    async def append(self, tenant: str, run_id: str, events: list[tuple[int, dict[str, Any]]]) -> bool:
        """Store a batch of numbered events; return whether a cancel was requested meanwhile."""
        pk = _pk(tenant, run_id)
        first = events[0][0]
        parts = split_text(json.dumps(events, ensure_ascii=False, separators=(",", ":")))
        expiry = self._expiry()
        await self._table.put_items(
            [
                {
                    **key(pk, f"EV#{first:010d}#{i:03d}"),
                    "data": {"S": part},
                    "parts": {"N": str(len(parts))},
                    **expiry,
                }
                for i, part in enumerate(parts)
            ]
        )
        response = await self._table.call(
            lambda c: c.update_item(
                TableName=self._table.name,
                Key=key(pk, "RUN"),
                UpdateExpression="SET last_seq = :seq, updated_at = :now",
                ExpressionAttributeValues={":seq": {"N": str(events[-1][0])}, ":now": {"S": now_iso()}},
                ReturnValues="ALL_NEW",
            )
        )
        return bool(response.get("Attributes", {}).get("cancel_requested", {}).get("BOOL", False))

    async def finish(
        self, tenant: str, run_id: str, *, status: str, usage: dict[str, Any], metrics: dict[str, Any]
    ) -> None:
        now = now_iso()
        await self._table.call(
            lambda c: c.update_item(
                TableName=self._table.name,
                Key=key(_pk(tenant, run_id), "RUN"),
                UpdateExpression="SET #s = :s, ended_at = :now, updated_at = :now, #u = :u, #m = :m",
                ExpressionAttributeNames={"#s": "status", "#u": "usage", "#m": "metrics"},
                ExpressionAttributeValues={
                    ":s": {"S": status},
                    ":now": {"S": now},
                    ":u": {"S": json.dumps(usage)},
                    ":m": {"S": json.dumps(metrics)},
                },
            )
        )

    async def get(self, tenant: str, run_id: str) -> RunRecord:
        response = await self._table.call(
            lambda c: c.get_item(
                TableName=self._table.name, Key=key(_pk(tenant, run_id), "RUN"), ConsistentRead=True
            )
        )
        item = response.get("Item")
        if item is None:
            raise NotFound(f"run {run_id} not found")
        return RunRecord(
            run_id=run_id,
            agent_id=item["agent_id"]["S"],
            session_id=item["session_id"]["S"],
            user_id=item["user_id"]["S"],
            status=item["status"]["S"],
            created_at=item["created_at"]["S"],
            updated_at=item.get("updated_at", {}).get("S", ""),
            ended_at=item.get("ended_at", {}).get("S"),
            last_seq=int(item.get("last_seq", {}).get("N", "-1")),
            cancel_requested=bool(item.get("cancel_requested", {}).get("BOOL", False)),
            usage=json.loads(item["usage"]["S"]) if "usage" in item else {},
            metrics=json.loads(item["metrics"]["S"]) if "metrics" in item else {},
        )

    async def events(
        self, tenant: str, run_id: str, *, after: int = -1, upto: int
    ) -> list[tuple[int, dict[str, Any]]]:
        """Stored events with ``after < seq <= upto``, in order.

        Pass the run record's ``last_seq`` as ``upto``: it moves only after a whole batch is stored,
        so a batch still being written (its parts not all there yet) is never read half.
        """
        pk = _pk(tenant, run_id)
        items = await self._table.query_all(pk, "EV#", ConsistentRead=True)
        batches: dict[int, list[str]] = {}
        for item in items:
            first = int(item[SORT_KEY]["S"].split("#")[1])
            if first <= upto:
                batches.setdefault(first, []).append(item["data"]["S"])
        out: list[tuple[int, dict[str, Any]]] = []
        for first in sorted(batches):
            out += [
                (int(seq), event) for seq, event in json.loads("".join(batches[first])) if after < seq <= upto
            ]
        return out

    async def request_cancel(self, tenant: str, run_id: str) -> None:
        """Flag a running run for cancellation; its producer sees the flag at its next flush."""
        try:
            await self._table.call(
                lambda c: c.update_item(
                    TableName=self._table.name,
                    Key=key(_pk(tenant, run_id), "RUN"),
                    UpdateExpression="SET cancel_requested = :t",
                    ConditionExpression="attribute_exists(pk) AND #s = :running",
                    ExpressionAttributeNames={"#s": "status"},
                    ExpressionAttributeValues={":t": {"BOOL": True}, ":running": {"S": "running"}},
                )
            )
        except ConditionFailed as e:
            run = await self.get(tenant, run_id)  # 404 if it does not exist
            raise Conflict(f"run {run_id} has already ended ({run.status})") from e
