"""Runs and their event logs, kept so a client can read a run's result, replay it, and cancel it.

- run:    pk ``T#{tenant}#R#{run_id}``, sk ``RUN`` (status, agent, session, times, ``deadline_at``,
          usage, metrics, ``last_seq`` and ``log_complete`` once it ended, ``cancel_requested``)
- events: same pk, sk ``EV#{first_seq:010d}#{part:03d}``: one batch of events, the JSON text
  ``[[seq, event], ...]`` compressed with zlib in ``z`` (binary; streamed text compresses 3-5x, and
  write units are counted per KB), split over several items only past 350 KB.

A batch's key is its first event's id and its content never changes, so writing it again (a retry of
a write that had in fact landed) stores the same item: never a doubled event. One batch is one item
(a rare multi-part batch, one transaction), so a reader sees a batch whole or not at all, and the
recorder writes batches strictly in order: the stored log is always a gap-free prefix of the run.
Readers ask only for batches after the last one they read (a key condition on the sort key).

Batch writes and cancel checks of all the runs in a process that come at the same moment go out
together (``_combine.py``): one BatchWriteItem per 25 runs, one BatchGetItem per 100.
Every item carries ``expires_at`` (TTL).
"""

from __future__ import annotations

import contextlib
import json
import zlib
from typing import Any

from agentstream.core.ports import RunRecord
from agentstream.errors import Conflict, NotFound
from agentstream.store._combine import Combiner
from agentstream.store._table import ConditionFailed, Table, epoch_seconds, key, now_iso
from agentstream.store.schema import SORT_KEY, TTL_ATTRIBUTE

__all__ = ["RunRecord", "RunRepository"]

# Sort keys of event batches: EV#0000000000#000 ... EV#9999999999#999; "~" sorts after every digit.
_EV_END = "EV#~"
# Compressed bytes per item (DynamoDB items hold 400 KB with their keys and attributes).
_MAX_PART_BYTES = 350_000


def _pk(tenant: str, run_id: str) -> str:
    return f"T#{tenant}#R#{run_id}"


def _batch_sk(first: int, part: int = 0) -> str:
    return f"EV#{first:010d}#{part:03d}"


class RunRepository:
    def __init__(self, table: Table, *, ttl_days: float = 30) -> None:
        self._table = table
        self._ttl_days = ttl_days
        self._writes: Combiner[dict[str, Any], None] = Combiner(self._write_batches, max_batch=25)
        self._reads: Combiner[str, bool] = Combiner(self._read_cancel_flags, max_batch=100)
        # the records of the runs this process created and has not finished: the final status is then
        # written as the whole item, in a batch with others, instead of one UpdateItem per run
        self._live: dict[tuple[str, str], dict[str, Any]] = {}

    def _expiry(self) -> dict[str, Any]:
        return {TTL_ATTRIBUTE: {"N": str(epoch_seconds(self._ttl_days))}}

    async def create(self, tenant: str, run: RunRecord) -> None:
        """Record a new run (its id is random: a plain put, batched with the other runs' writes)."""
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
        if run.deadline_at is not None:
            item["deadline_at"] = {"N": str(run.deadline_at)}
        await self._writes.submit(item)
        self._live[(tenant, run.run_id)] = item

    async def append(self, tenant: str, run_id: str, first_seq: int, data: str) -> None:
        """Store one batch of events (a JSON array starting at ``first_seq``), once."""
        pk = _pk(tenant, run_id)
        packed = zlib.compress(data.encode(), 6)
        parts = [packed[i : i + _MAX_PART_BYTES] for i in range(0, len(packed), _MAX_PART_BYTES)]
        expiry = self._expiry()
        items = [
            {**key(pk, _batch_sk(first_seq, i)), "z": {"B": part}, "parts": {"N": str(len(parts))}, **expiry}
            for i, part in enumerate(parts)
        ]
        if len(items) == 1:
            await self._writes.submit(items[0])
            return
        condition = "attribute_not_exists(pk)"
        puts: list[Any] = [
            {"Put": {"TableName": self._table.name, "Item": i, "ConditionExpression": condition}}
            for i in items
        ]
        with contextlib.suppress(ConditionFailed):  # an earlier attempt of this very batch was stored
            await self._table.call(lambda c: c.transact_write_items(TransactItems=puts))

    async def _write_batches(self, items: list[dict[str, Any]]) -> list[None]:
        # one request may not name a key twice (a retry can meet the attempt it repeats): same content
        unique = {(i["pk"]["S"], i["sk"]["S"]): i for i in items}
        await self._table.put_items(list(unique.values()))
        return [None] * len(items)

    async def cancel_requested(self, tenant: str, run_id: str) -> bool:
        """Whether a cancel was asked for: one eventually consistent read of one attribute, batched
        with the other runs' checks of the same moment."""
        return await self._reads.submit(_pk(tenant, run_id))

    async def _read_cancel_flags(self, pks: list[str]) -> list[bool]:
        unique = list(dict.fromkeys(pks))
        items = await self._table.get_batch([key(pk, "RUN") for pk in unique], "pk, cancel_requested")
        flags = {i["pk"]["S"]: bool(i.get("cancel_requested", {}).get("BOOL", False)) for i in items}
        return [flags.get(pk, False) for pk in pks]

    async def finish(
        self,
        tenant: str,
        run_id: str,
        *,
        status: str,
        usage: dict[str, Any],
        metrics: dict[str, Any],
        last_seq: int,
        log_complete: bool,
    ) -> None:
        now = now_iso()
        final: dict[str, Any] = {
            "status": {"S": status},
            "ended_at": {"S": now},
            "updated_at": {"S": now},
            "usage": {"S": json.dumps(usage)},
            "metrics": {"S": json.dumps(metrics)},
            "last_seq": {"N": str(last_seq)},
            "log_complete": {"BOOL": log_complete},
        }
        created = self._live.pop((tenant, run_id), None)
        if created is not None:
            if status == "cancelled":
                final["cancel_requested"] = {"BOOL": True}
            await self._writes.submit({**created, **final})
            return
        names = {f"#{name}": name for name in final}
        await self._table.call(
            lambda c: c.update_item(
                TableName=self._table.name,
                Key=key(_pk(tenant, run_id), "RUN"),
                UpdateExpression="SET " + ", ".join(f"#{name} = :{name}" for name in final),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={f":{name}": value for name, value in final.items()},
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
        deadline = item.get("deadline_at", {}).get("N")
        return RunRecord(
            run_id=run_id,
            agent_id=item["agent_id"]["S"],
            session_id=item["session_id"]["S"],
            user_id=item["user_id"]["S"],
            status=item["status"]["S"],
            created_at=item["created_at"]["S"],
            updated_at=item.get("updated_at", {}).get("S", ""),
            ended_at=item.get("ended_at", {}).get("S"),
            deadline_at=int(deadline) if deadline is not None else None,
            last_seq=int(item.get("last_seq", {}).get("N", "-1")),
            log_complete=bool(item.get("log_complete", {}).get("BOOL", True)),
            cancel_requested=bool(item.get("cancel_requested", {}).get("BOOL", False)),
            usage=json.loads(item["usage"]["S"]) if "usage" in item else {},
            metrics=json.loads(item["metrics"]["S"]) if "metrics" in item else {},
        )

    async def batches(
        self, tenant: str, run_id: str, *, after_first: int = -1
    ) -> list[tuple[int, list[tuple[int, dict[str, Any]]]]]:
        """The stored batches whose first id is above ``after_first``, in order, as
        ``(first_seq, [(seq, event), ...])``: only what is new since the last batch a reader saw."""
        items = await self._table.query_all(
            _pk(tenant, run_id), "", between=(_batch_sk(after_first + 1), _EV_END), ConsistentRead=True
        )
        parts: dict[int, list[bytes]] = {}
        expected: dict[int, int] = {}
        for item in items:
            first = int(item[SORT_KEY]["S"].split("#")[1])
            # "data": a batch stored as plain text by an earlier version
            part = item["z"]["B"] if "z" in item else item["data"]["S"].encode()
            parts.setdefault(first, []).append(part)
            expected[first] = int(item.get("parts", {}).get("N", "1"))
        out: list[tuple[int, list[tuple[int, dict[str, Any]]]]] = []
        for first in sorted(parts):
            if len(parts[first]) != expected[first]:
                break  # cannot happen with whole-batch writes; never hand out half a batch
            raw = b"".join(parts[first])
            text = zlib.decompress(raw) if raw[:1] != b"[" else raw
            out.append((first, [(int(seq), event) for seq, event in json.loads(text)]))
        return out

    async def request_cancel(self, tenant: str, run_id: str) -> None:
        """Flag a running run for cancellation; the instance running it sees the flag within a second."""
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
            raise Conflict(f"run {run_id} has already ended ({run.effective_status})") from e
