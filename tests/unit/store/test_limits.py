"""Per-tenant run limits: the table's limiter (moto) and the in-memory one obey the same rules."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any, Protocol

import pytest

from agentstream.core.ports import DEADLINE_GRACE_SECONDS, RunLimits, RunSlot
from agentstream.errors import RateLimited
from agentstream.store._table import Table
from agentstream.store.limits import LimitRepository
from tests.support.memory_store import MemoryLimits

pytestmark = pytest.mark.anyio

# 50 s into a minute: the window has 10 s left
START = 29_000_000 * 60 + 50.0


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now

    def ms(self, seconds_from_now: float) -> int:
        return int((self.now + seconds_from_now) * 1000)


class Limiter(Protocol):
    async def acquire(self, tenant: str, run_id: str, *, deadline_at: int, limits: RunLimits) -> RunSlot: ...

    async def release(self, slot: RunSlot, *, started: bool = True) -> None: ...


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["dynamodb", "memory"])
def limiter(request: pytest.FixtureRequest, clock: Clock) -> Iterator[Limiter]:
    if request.param == "memory":
        yield MemoryLimits(clock=clock)
        return
    dynamodb = request.getfixturevalue("dynamodb")
    yield LimitRepository(Table("agentstream", dynamodb), clock=clock)


async def _take(limiter: Limiter, clock: Clock, run_id: str, limits: RunLimits, **kw: Any) -> RunSlot:
    return await limiter.acquire(
        kw.get("tenant", "t"), run_id, deadline_at=clock.ms(kw.get("lasts", 60)), limits=limits
    )


async def test_starts_per_minute_are_counted_and_the_next_minute_opens_again(
    limiter: Limiter, clock: Clock
) -> None:
    limits = RunLimits(per_minute=3)
    for i in range(3):
        slot = await _take(limiter, clock, f"run_{i}", limits)
        assert (slot.minute, slot.holds_slot) == (int(START // 60), False)
        await limiter.release(slot)  # ended: a finished run still counts in its minute
    with pytest.raises(RateLimited) as refused:
        await _take(limiter, clock, "run_3", limits)
    assert refused.value.status == 429
    assert refused.value.code == "rate_limited"
    assert refused.value.retry_after == 10  # the seconds left in this minute
    clock.now += 10
    await _take(limiter, clock, "run_4", limits)


async def test_concurrent_runs_are_held_until_released(limiter: Limiter, clock: Clock) -> None:
    limits = RunLimits(concurrent=2)
    first = await _take(limiter, clock, "run_1", limits)
    await _take(limiter, clock, "run_2", limits)
    with pytest.raises(RateLimited) as refused:
        await _take(limiter, clock, "run_3", limits)
    assert 1 <= refused.value.retry_after <= 5
    await limiter.release(first)
    third = await _take(limiter, clock, "run_3", limits)
    assert (third.holds_slot, third.minute) == (True, None)


async def test_a_refused_start_takes_nothing(limiter: Limiter, clock: Clock) -> None:
    limits = RunLimits(per_minute=2, concurrent=1)
    a = await _take(limiter, clock, "run_a", limits)
    with pytest.raises(RateLimited):
        await _take(limiter, clock, "run_b", limits)  # over concurrency: not counted in the minute
    await limiter.release(a)
    c = await _take(limiter, clock, "run_c", limits)  # the minute's second start, not its third
    await limiter.release(c)
    with pytest.raises(RateLimited) as refused:
        await _take(limiter, clock, "run_d", limits)  # over the minute: holds no slot...
    assert refused.value.retry_after == 10
    clock.now += 10
    await _take(limiter, clock, "run_e", limits)  # ...so the next minute's start has its slot


async def test_a_slot_of_a_run_whose_instance_died_frees_itself_after_its_deadline(
    limiter: Limiter, clock: Clock
) -> None:
    limits = RunLimits(concurrent=2)
    await _take(limiter, clock, "run_dead_1", limits, lasts=1)
    await _take(limiter, clock, "run_dead_2", limits, lasts=1)
    clock.now += 1
    with pytest.raises(RateLimited) as refused:  # still within the grace: the runs may be alive
        await _take(limiter, clock, "run_x", limits)
    assert refused.value.retry_after == pytest.approx(DEADLINE_GRACE_SECONDS, abs=1)
    clock.now += DEADLINE_GRACE_SECONDS + 0.5
    await _take(limiter, clock, "run_1", limits)
    await _take(limiter, clock, "run_2", limits)
    with pytest.raises(RateLimited):
        await _take(limiter, clock, "run_3", limits)


async def test_a_start_that_never_ran_gives_its_count_back(limiter: Limiter, clock: Clock) -> None:
    limits = RunLimits(per_minute=1, concurrent=1)
    slot = await _take(limiter, clock, "run_1", limits)
    await limiter.release(slot, started=False)
    slot = await _take(limiter, clock, "run_2", limits)
    await limiter.release(slot)
    with pytest.raises(RateLimited):
        await _take(limiter, clock, "run_3", limits)


async def test_one_tenants_limits_never_refuse_another(limiter: Limiter, clock: Clock) -> None:
    limits = RunLimits(per_minute=1, concurrent=1)
    await _take(limiter, clock, "run_a", limits, tenant="a")
    with pytest.raises(RateLimited):
        await _take(limiter, clock, "run_a2", limits, tenant="a")
    await _take(limiter, clock, "run_b", limits, tenant="b")


async def test_releasing_twice_or_after_expiry_is_harmless(limiter: Limiter, clock: Clock) -> None:
    limits = RunLimits(per_minute=5, concurrent=1)
    slot = await _take(limiter, clock, "run_1", limits)
    await limiter.release(slot)
    await limiter.release(slot)
    await limiter.release(RunSlot("nobody", "run_x", 12, True), started=False)
    await _take(limiter, clock, "run_2", limits)


def _item(dynamodb: Any, tenant: str) -> dict[str, Any]:
    item: dict[str, Any] = dynamodb.get_item(
        TableName="agentstream", Key={"pk": {"S": f"T#{tenant}#LIMITS"}, "sk": {"S": "LIMITS"}}
    ).get("Item", {})
    return item


def _running(dynamodb: Any, tenant: str) -> dict[str, int]:
    return {k: int(v["N"]) for k, v in _item(dynamodb, tenant).get("slots", {}).get("M", {}).items()}


async def test_the_table_keeps_live_slots_only_and_counts_expire(dynamodb: Any, clock: Clock) -> None:
    limiter = LimitRepository(Table("agentstream", dynamodb), clock=clock)
    limits = RunLimits(per_minute=10, concurrent=2)
    await _take(limiter, clock, "run_dead", limits, lasts=1)
    live = await _take(limiter, clock, "run_live", limits)
    clock.now += 1 + DEADLINE_GRACE_SECONDS + 0.5
    await _take(limiter, clock, "run_new", limits)
    assert set(_running(dynamodb, "t")) == {"run_live", "run_new"}  # the dead run's slot was removed
    await limiter.release(live)
    assert set(_running(dynamodb, "t")) == {"run_new"}
    item = _item(dynamodb, "t")
    assert (item["m"], item["n"]) == ({"N": str(int(START // 60))}, {"N": "3"})
    assert int(item["expires_at"]["N"]) > START + 86_400  # kept while the tenant is active, then TTL
    clock.now += 60  # a start in the next minute counts anew, in the same item
    await _take(limiter, clock, "run_next", RunLimits(per_minute=10))
    item = _item(dynamodb, "t")
    assert (item["m"], item["n"]) == ({"N": str(int(START // 60) + 1)}, {"N": "1"})
    assert set(item["slots"]["M"]) == {"run_new"}  # the count's write left the slots alone


async def test_a_start_is_one_write_and_a_run_two(dynamodb: Any, clock: Clock) -> None:
    """The store cost of the limits: a start counts and takes its slot in one UpdateItem, its end
    gives the slot back in one more (a first start of a minute or of a tenant tries once more)."""
    calls: list[str] = []
    dynamodb.meta.events.register("before-call.dynamodb", lambda model, **_: calls.append(model.name))
    limiter = LimitRepository(Table("agentstream", dynamodb), clock=clock)
    limits = RunLimits(per_minute=10, concurrent=5)
    first = await _take(limiter, clock, "run_1", limits)  # a new tenant: the guess is wrong once
    assert calls == ["UpdateItem", "UpdateItem"]
    calls.clear()
    second = await _take(limiter, clock, "run_2", limits)
    await limiter.release(second)
    await limiter.release(first)
    assert calls == ["UpdateItem", "UpdateItem", "UpdateItem"]


def test_starts_racing_on_two_clients_never_exceed_the_limits() -> None:
    """Many starts at once, through one moto server (serialized like DynamoDB's item writes), on two
    clients as two instances would: exactly the limit gets through, on a fresh tenant too."""
    from agentstream.store import create_table
    from tests.support.cluster import MotoServer

    moto = MotoServer().start()
    try:
        create_table("agentstream", moto.client())
        instances = [LimitRepository(Table("agentstream", moto.client())) for _ in range(2)]

        async def race(limits: RunLimits, tenant: str) -> list[RunSlot | BaseException]:
            deadline = int((time.time() + 3600) * 1000)
            return await asyncio.gather(
                *(
                    instances[i % 2].acquire(tenant, f"run_{i}", deadline_at=deadline, limits=limits)
                    for i in range(16)
                ),
                return_exceptions=True,
            )

        results = asyncio.run(race(RunLimits(concurrent=5), "fresh"))
        assert sum(isinstance(r, RunSlot) for r in results) == 5
        assert all(isinstance(r, RunSlot | RateLimited) for r in results), results
        assert len(_running(moto.client(), "fresh")) == 5
        results = asyncio.run(race(RunLimits(per_minute=7, concurrent=100), "counted"))
        slots = [r for r in results if isinstance(r, RunSlot)]
        assert len(slots) in (7, 14)  # 14: the race straddled a minute's end
        assert all(isinstance(r, RunSlot | RateLimited) for r in results), results
        assert len(_running(moto.client(), "counted")) == len(slots)  # refused starts hold nothing
    finally:
        moto.stop()


async def test_a_runs_end_sweeps_the_slots_of_dead_runs_so_the_item_stays_small(
    dynamodb: Any, clock: Clock
) -> None:
    # A high limit is never full, so no start ever has to remove dead runs' slots; the end of a run does.
    limiter = LimitRepository(Table("agentstream", dynamodb), clock=clock)
    limits = RunLimits(concurrent=1000)
    for i in range(30):
        await _take(limiter, clock, f"run_dead_{i}", limits, lasts=1)
    live = await _take(limiter, clock, "run_live", limits)
    ending = await _take(limiter, clock, "run_ending", limits)
    await limiter.release(ending)
    assert len(_running(dynamodb, "t")) == 31  # the dead runs may still be alive: kept
    clock.now += 1 + DEADLINE_GRACE_SECONDS + 0.5
    another = await _take(limiter, clock, "run_another", limits)
    await limiter.release(another)
    assert set(_running(dynamodb, "t")) == {"run_live"}
    await limiter.release(live)
    assert _running(dynamodb, "t") == {}
