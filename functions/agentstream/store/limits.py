"""Per-tenant run limits, counted in the table so that every instance sees the same counts.

One item per tenant: pk ``T#{tenant}#LIMITS``, sk ``LIMITS``, holding

- ``m`` and ``n``: the minute (epoch seconds // 60) being counted and the runs started in it (a fixed
  window; a start in a later minute sets ``m`` anew and ``n`` to one; ``m`` never goes back);
- ``slots``: a map of run id -> the run's ``deadline_at`` (epoch ms), the runs running now. A slot past
  its deadline (and ``DEADLINE_GRACE_SECONDS``) belongs to a run whose instance died: it does not count,
  and the next start that finds the map full removes it, in the same write that takes its own slot.

A start is one conditional ``UpdateItem`` that counts it and takes its slot together, so a refused start
changes nothing, and a run costs two writes in all (its start, its end). A write whose condition failed
returns the item as it was (``ReturnValuesOnConditionCheckFailure``): the next try is built from that,
with no extra read (a new minute, a first slot, slots of dead runs), or the start is refused from it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentstream.core.ports import DEADLINE_GRACE_SECONDS, RunLimits, RunSlot
from agentstream.errors import RateLimited
from agentstream.store._table import Table, key
from agentstream.store.schema import TTL_ATTRIBUTE

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = ["LimitRepository", "concurrency_retry_after", "slot_expired"]

_SK = "LIMITS"
# The item outlives the tenant's last start by this much (runs last at most a day: max_run_seconds).
_KEEP_SECONDS = 2 * 86_400
# Conditional writes tried before a start that keeps losing races is refused.
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


@dataclass
class _Update:
    """One UpdateItem being put together: its SET/ADD/REMOVE clauses and conditions."""

    sets: list[str] = field(default_factory=list)
    adds: list[str] = field(default_factory=list)
    removes: list[str] = field(default_factory=list)
    conditions: list[str] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)

    def expression(self) -> str:
        parts = []
        for verb, clauses in (("SET", self.sets), ("ADD", self.adds), ("REMOVE", self.removes)):
            if clauses:
                parts.append(f"{verb} {', '.join(clauses)}")
        return " ".join(parts)

    def request(self, table: str, item_key: dict[str, Any]) -> dict[str, Any]:
        request: dict[str, Any] = {
            "TableName": table,
            "Key": item_key,
            "UpdateExpression": self.expression(),
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if self.conditions:
            request["ConditionExpression"] = " AND ".join(f"({c})" for c in self.conditions)
        if self.names:
            request["ExpressionAttributeNames"] = self.names
        if self.values:
            request["ExpressionAttributeValues"] = self.values
        return request


class LimitRepository:
    """The table's ``RunLimiter`` (``core/ports.py``)."""

    def __init__(self, table: Table, *, clock: Callable[[], float] = time.time) -> None:
        self._table = table
        self._clock = clock

    async def acquire(self, tenant: str, run_id: str, *, deadline_at: int, limits: RunLimits) -> RunSlot:
        now = self._clock()
        minute = int(now // 60) if limits.per_minute > 0 else None
        holds = limits.concurrent > 0
        slot = RunSlot(tenant, run_id, minute, holds)
        if minute is None and not holds:
            return slot
        item_key = key(_pk(tenant), _SK)
        # the first try assumes the usual: this minute is being counted and runs hold slots already
        old: dict[str, Any] | None = {"m": {"N": str(minute)}, "n": {"N": "0"}, "slots": {"M": {}}}
        for _ in range(_ATTEMPTS):
            update = self._start(run_id, deadline_at, limits, minute, old, now)
            request = update.request(self._table.name, item_key)
            applied, old = await self._table.call(lambda c, r=request: _conditional_update(c, r))  # type: ignore[misc]
            if applied:
                return slot
            now = self._clock()
        raise RateLimited("too many runs are starting at once: try again", retry_after=1.0)

    def _start(
        self,
        run_id: str,
        deadline_at: int,
        limits: RunLimits,
        minute: int | None,
        old: dict[str, Any] | None,
        now: float,
    ) -> _Update:
        """The write that counts the start and takes its slot, given the item as it was (``old``), or
        ``RateLimited`` when that item already says no."""
        update = _Update(
            sets=["#ttl = :ttl"],
            names={"#ttl": TTL_ATTRIBUTE},
            values={":ttl": {"N": str(int(now) + _KEEP_SECONDS)}},
        )
        refusals: list[RateLimited] = []
        if minute is not None:
            limit = limits.per_minute
            seen = int(old["m"]["N"]) if old is not None and "m" in old else None
            if seen is not None and seen > minute:
                minute = seen  # another instance's clock is a little ahead: count in its minute
            update.values[":minute"] = {"N": str(minute)}
            counted = seen is not None and seen >= minute
            if counted and old is not None and int(old.get("n", {"N": "0"})["N"]) >= limit:
                retry_after = rate_retry_after(minute, now)
                refusals.append(
                    RateLimited(
                        f"at most {limit} runs may start per minute: try again in {retry_after:.0f} s",
                        retry_after=retry_after,
                    )
                )
            elif counted:
                update.adds.append("n :one")
                update.conditions.append("m = :minute AND n < :rate_limit")
                update.values |= {":one": {"N": "1"}, ":rate_limit": {"N": str(limit)}}
            else:  # a new minute (or a first start)
                update.sets.append("m = :minute, n = :one")
                update.conditions.append("attribute_not_exists(m) OR m < :minute")
                update.values[":one"] = {"N": "1"}
        if limits.concurrent > 0:
            limit = limits.concurrent
            update.names["#run"] = run_id
            update.values[":deadline"] = {"N": str(deadline_at)}
            if old is None or "slots" not in old:
                update.sets.append("slots = :slots")
                update.conditions.append("attribute_not_exists(slots)")
                update.values[":slots"] = {"M": {run_id: {"N": str(deadline_at)}}}
                del update.names["#run"], update.values[":deadline"]
            else:
                slots = {k: int(v["N"]) for k, v in old["slots"].get("M", {}).items()}
                expired = [k for k, d in slots.items() if slot_expired(d, now)]
                live = [d for k, d in slots.items() if k not in expired]
                if len(live) >= limit:
                    refusals.append(
                        RateLimited(
                            f"at most {limit} runs may run at once: try again when one has ended",
                            retry_after=concurrency_retry_after(live, now),
                        )
                    )
                else:
                    # room once the runs of dead instances are removed: remove them and take the slot,
                    # in a write that holds only if those slots are still there (else try again)
                    update.sets.append("slots.#run = :deadline")
                    condition = "attribute_exists(slots) AND size(slots) < :run_limit"
                    update.values[":run_limit"] = {"N": str(limit + len(expired))}
                    for i, dead in enumerate(expired):
                        update.names[f"#dead{i}"] = dead
                        update.removes.append(f"slots.#dead{i}")
                        condition += f" AND attribute_exists(slots.#dead{i})"
                    update.conditions.append(condition)
        if refusals:
            raise max(refusals, key=lambda r: r.retry_after)
        return update

    async def release(self, slot: RunSlot, *, started: bool = True) -> None:
        """Give the slot back; a start that never ran also gives back its count (if its minute is
        still the one counted). One write; nothing to give back is no error."""
        update = _Update(conditions=["attribute_exists(pk)"])
        if slot.holds_slot:
            update.removes.append("slots.#run")
            update.names["#run"] = slot.run_id
        uncount = not started and slot.minute is not None
        if uncount:
            update.adds.append("n :minus")
            update.conditions.append("m = :minute AND n > :zero")
            update.values |= {":minus": {"N": "-1"}, ":minute": {"N": str(slot.minute)}, ":zero": {"N": "0"}}
        if not update.removes and not update.adds:
            return
        item_key = key(_pk(slot.tenant), _SK)
        request = update.request(self._table.name, item_key) | {"ReturnValues": "ALL_NEW"}
        applied, item = await self._table.call(lambda c: _conditional_update(c, request))
        if not applied and uncount and slot.holds_slot and item is not None:
            # the minute was counted anew meanwhile: give back the slot alone
            retry = _Update(
                removes=["slots.#run"], conditions=["attribute_exists(pk)"], names={"#run": slot.run_id}
            )
            request = retry.request(self._table.name, item_key) | {"ReturnValues": "ALL_NEW"}
            applied, item = await self._table.call(lambda c: _conditional_update(c, request))
        if applied and item is not None:
            await self._sweep(item_key, item)

    async def _sweep(self, item_key: dict[str, Any], item: dict[str, Any]) -> None:
        """Remove the slots of runs whose instance died (rare), so that the item, and so what every
        write of it costs, stays as small as the runs really running. After the run's end, never on
        a start's way; a sweep that races with another changes nothing."""
        now = self._clock()
        slots = {k: int(v["N"]) for k, v in item.get("slots", {}).get("M", {}).items()}
        expired = [k for k, d in slots.items() if slot_expired(d, now)][:50]
        if not expired:
            return
        sweep = _Update(conditions=["attribute_exists(pk)"])
        for i, dead in enumerate(expired):
            sweep.names[f"#dead{i}"] = dead
            sweep.removes.append(f"slots.#dead{i}")
        request = sweep.request(self._table.name, item_key)
        await self._table.call(lambda c: _conditional_update(c, request))


def _conditional_update(
    client: DynamoDBClient, request: dict[str, Any]
) -> tuple[bool, dict[str, Any] | None]:
    """(applied, the item: as it was when the condition failed, None if there was none; when applied,
    as it is now if the request asked for it with ``ReturnValues``, else None)."""
    try:
        response = client.update_item(**request)
    except client.exceptions.ConditionalCheckFailedException as e:
        item: dict[str, Any] | None = e.response.get("Item")  # type: ignore[assignment]
        return False, item
    attributes: dict[str, Any] | None = response.get("Attributes")
    return True, attributes
