"""Per-tenant run limits, counted in the table so that every instance sees the same counts.

- starts: pk ``T#{tenant}#LIMITS``, sk ``RATE#{minute}`` (``minute`` = epoch seconds // 60): ``n``, the
  runs started in that minute (a fixed window), raised by one conditional ``UpdateItem``
  (``n < limit``); the item expires (TTL) a few minutes later.
- running: same pk, sk ``RUNNING``: ``slots``, a map of run id -> the run's ``deadline_at`` (epoch ms).
  A run takes its slot with one conditional ``UpdateItem`` (``size(slots) < limit``) and removes it
  when it ends. A slot past its deadline (and ``DEADLINE_GRACE_SECONDS``) belongs to a run whose
  instance died: it does not count, and the next start that finds the map full removes it, in the
  same conditional write that takes its own slot.

Both writes of a start go out together (one round trip) and beside the agent's read. A refused start
leaves nothing: if one write was refused, the other is undone before the ``429`` is raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agentstream.core.ports import DEADLINE_GRACE_SECONDS, RunLimits, RunSlot
from agentstream.errors import RateLimited
from agentstream.store._table import ConditionFailed, Table, key
from agentstream.store.schema import TTL_ATTRIBUTE

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = ["LimitRepository", "concurrency_retry_after", "slot_expired"]

logger = logging.getLogger(__name__)

_RUNNING_SK = "RUNNING"
# A minute's count is kept this long after the minute ended (TTL deletes it later still).
_RATE_KEEP_SECONDS = 120
# The RUNNING item outlives its latest slot by this much (runs last at most a day: max_run_seconds).
_RUNNING_KEEP_SECONDS = 2 * 86_400
# Conditional writes tried before a start that keeps losing races is refused (each try reads the
# item's state from the failed write itself: no extra read).
_ATTEMPTS = 5
# What a refused start over the concurrency limit is told to wait, at most: runs end at any moment,
# the earliest slot's deadline is only an upper bound.
_CONCURRENCY_RETRY_MAX_SECONDS = 5.0


def _pk(tenant: str) -> str:
    return f"T#{tenant}#LIMITS"


def slot_expired(deadline_at: int, now: float) -> bool:
    """Whether a slot's run is over for sure (its deadline and the grace are past): it holds nothing."""
    return now * 1000 > deadline_at + DEADLINE_GRACE_SECONDS * 1000


def concurrency_retry_after(deadlines: list[int], now: float) -> float:
    """Seconds a start refused for concurrency should wait: until the first slot surely ends, at most
    a few seconds (a run usually ends well before its deadline), at least one."""
    earliest = min(deadlines, default=math.inf)
    left = earliest / 1000 + DEADLINE_GRACE_SECONDS - now
    return max(1.0, min(_CONCURRENCY_RETRY_MAX_SECONDS, math.ceil(left)))


def rate_retry_after(minute: int, now: float) -> float:
    """Seconds until the next minute's window opens (at least one)."""
    return max(1.0, math.ceil((minute + 1) * 60 - now))


class LimitRepository:
    """The table's ``RunLimiter`` (``core/ports.py``)."""

    def __init__(self, table: Table, *, clock: Callable[[], float] = time.time) -> None:
        self._table = table
        self._clock = clock

    async def acquire(self, tenant: str, run_id: str, *, deadline_at: int, limits: RunLimits) -> RunSlot:
        now = self._clock()
        minute = int(now // 60) if limits.per_minute > 0 else None
        holds = limits.concurrent > 0
        writes: list[Any] = []
        if minute is not None:
            writes.append(self._count(tenant, minute, limits.per_minute, now))
        if holds:
            writes.append(self._hold(tenant, run_id, deadline_at, limits.concurrent))
        results = await asyncio.gather(*writes, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        slot = RunSlot(tenant, run_id, minute, holds)
        if not failures:
            return slot
        # undo what did go through, so that a refused start leaves nothing behind
        counted = minute is not None and not isinstance(results[0], BaseException)
        held = holds and not isinstance(results[-1], BaseException)
        await self._undo(RunSlot(tenant, run_id, minute if counted else None, held))
        refusals = [f for f in failures if isinstance(f, RateLimited)]
        if len(refusals) == len(failures):
            raise max(refusals, key=lambda r: r.retry_after)
        raise next(f for f in failures if not isinstance(f, RateLimited))

    async def release(self, slot: RunSlot, *, started: bool = True) -> None:
        await self._undo(slot if not started else RunSlot(slot.tenant, slot.run_id, None, slot.holds_slot))

    async def _undo(self, slot: RunSlot) -> None:
        """Remove the slot's run from the running map and, given a minute, take back its count."""
        writes: list[Any] = []
        if slot.holds_slot:
            writes.append(self._drop_slot(slot.tenant, slot.run_id))
        if slot.minute is not None:
            writes.append(self._uncount(slot.tenant, slot.minute))
        for result in await asyncio.gather(*writes, return_exceptions=True):
            if isinstance(result, Exception):
                logger.warning("run %s: could not give back its limits (%s)", slot.run_id, result)

    # starts per minute

    async def _count(self, tenant: str, minute: int, limit: int, now: float) -> None:
        request: dict[str, Any] = {
            "TableName": self._table.name,
            "Key": key(_pk(tenant), f"RATE#{minute}"),
            "UpdateExpression": "ADD n :one SET #ttl = :ttl",
            "ConditionExpression": "attribute_not_exists(n) OR n < :limit",
            "ExpressionAttributeNames": {"#ttl": TTL_ATTRIBUTE},
            "ExpressionAttributeValues": {
                ":one": {"N": "1"},
                ":limit": {"N": str(limit)},
                ":ttl": {"N": str((minute + 1) * 60 + _RATE_KEEP_SECONDS)},
            },
        }
        try:
            await self._table.call(lambda c: c.update_item(**request))
        except ConditionFailed:
            retry_after = rate_retry_after(minute, now)
            raise RateLimited(
                f"at most {limit} runs may start per minute: try again in {retry_after:.0f} s",
                retry_after=retry_after,
            ) from None

    async def _uncount(self, tenant: str, minute: int) -> None:
        request: dict[str, Any] = {
            "TableName": self._table.name,
            "Key": key(_pk(tenant), f"RATE#{minute}"),
            "UpdateExpression": "ADD n :minus",
            "ConditionExpression": "n > :zero",
            "ExpressionAttributeValues": {":minus": {"N": "-1"}, ":zero": {"N": "0"}},
        }
        # no such count (the minute's item expired): nothing to take back
        with contextlib.suppress(ConditionFailed):
            await self._table.call(lambda c: c.update_item(**request))

    # runs running at once

    async def _hold(self, tenant: str, run_id: str, deadline_at: int, limit: int) -> None:
        """Add ``run_id`` to the tenant's running map unless ``limit`` live runs are in it."""
        item_key = key(_pk(tenant), _RUNNING_SK)
        ttl = {"N": str(deadline_at // 1000 + _RUNNING_KEEP_SECONDS)}
        # first try: the map exists and has room (the usual case: one write)
        names: dict[str, str] = {"#run": run_id, "#ttl": TTL_ATTRIBUTE}
        values: dict[str, Any] = {
            ":deadline": {"N": str(deadline_at)},
            ":limit": {"N": str(limit)},
            ":ttl": ttl,
        }
        update = "SET slots.#run = :deadline, #ttl = :ttl"
        condition = "attribute_exists(slots) AND size(slots) < :limit"
        for _ in range(_ATTEMPTS):
            request: dict[str, Any] = {
                "TableName": self._table.name,
                "Key": item_key,
                "UpdateExpression": update,
                "ConditionExpression": condition,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
            applied, old = await self._table.call(lambda c, r=request: _conditional_update(c, r))  # type: ignore[misc]
            if applied:
                return
            if old is None or "slots" not in old:
                # no map yet: create it holding this run (unless another start just did)
                names = {"#ttl": TTL_ATTRIBUTE}
                values = {":slots": {"M": {run_id: {"N": str(deadline_at)}}}, ":ttl": ttl}
                update = "SET slots = :slots, #ttl = :ttl"
                condition = "attribute_not_exists(slots)"
                continue
            now = self._clock()
            slots = {k: int(v["N"]) for k, v in old.get("slots", {}).get("M", {}).items()}
            expired = [k for k, d in slots.items() if slot_expired(d, now)]
            live = [d for k, d in slots.items() if k not in expired]
            if len(live) >= limit:
                raise RateLimited(
                    f"at most {limit} runs may run at once: try again when one has ended",
                    retry_after=concurrency_retry_after(live, now),
                )
            # room once the runs of dead instances are removed: remove them and take the slot, in one
            # write that holds only if those slots are still there (else try again with what is)
            names = {"#run": run_id, "#ttl": TTL_ATTRIBUTE}
            values = {
                ":deadline": {"N": str(deadline_at)},
                ":limit": {"N": str(limit + len(expired))},
                ":ttl": ttl,
            }
            update = "SET slots.#run = :deadline, #ttl = :ttl"
            condition = "attribute_exists(slots) AND size(slots) < :limit"
            for i, dead in enumerate(expired):
                names[f"#dead{i}"] = dead
                condition += f" AND attribute_exists(slots.#dead{i})"
            if expired:
                update += " REMOVE " + ", ".join(f"slots.#dead{i}" for i in range(len(expired)))
        raise RateLimited("too many runs are starting at once: try again", retry_after=1.0)

    async def _drop_slot(self, tenant: str, run_id: str) -> None:
        request: dict[str, Any] = {
            "TableName": self._table.name,
            "Key": key(_pk(tenant), _RUNNING_SK),
            "UpdateExpression": "REMOVE slots.#run",
            "ConditionExpression": "attribute_exists(slots)",
            "ExpressionAttributeNames": {"#run": run_id},
        }
        # no map (it expired): nothing to give back
        with contextlib.suppress(ConditionFailed):
            await self._table.call(lambda c: c.update_item(**request))


def _conditional_update(
    client: DynamoDBClient, request: dict[str, Any]
) -> tuple[bool, dict[str, Any] | None]:
    """(applied, the item as it was when the condition failed: None if there was none)."""
    try:
        client.update_item(**request)
    except client.exceptions.ConditionalCheckFailedException as e:
        item: dict[str, Any] | None = e.response.get("Item")  # type: ignore[assignment]
        return False, item
    return True, None
