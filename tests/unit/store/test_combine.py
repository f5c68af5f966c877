"""Calls made at the same moment go out as one batch; each caller keeps its own result and deadline."""

from __future__ import annotations

import asyncio
import time

import pytest

from agentstream.core.control import io_deadline
from agentstream.errors import StoreUnavailable
from agentstream.store._combine import Combiner

pytestmark = pytest.mark.anyio


async def test_calls_of_one_moment_share_batches_of_at_most_max_batch() -> None:
    batches: list[list[int]] = []

    async def run(items: list[int]) -> list[int]:
        batches.append(items)
        return [i * 10 for i in items]

    combiner: Combiner[int, int] = Combiner(run, max_batch=4)
    results = await asyncio.gather(*(combiner.submit(i) for i in range(10)))
    assert results == [i * 10 for i in range(10)]
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert await combiner.submit(42) == 420  # a later call starts a batch of its own
    assert batches[-1] == [42]


async def test_a_failed_batch_fails_its_callers_only() -> None:
    async def run(items: list[int]) -> list[int]:
        if 0 in items:
            raise StoreUnavailable("the data store failed")
        return items

    combiner: Combiner[int, int] = Combiner(run, max_batch=2)
    results = await asyncio.gather(*(combiner.submit(i) for i in range(4)), return_exceptions=True)
    assert [type(r).__name__ for r in results] == ["StoreUnavailable", "StoreUnavailable", "int", "int"]


async def test_each_caller_waits_within_its_own_deadline_and_out_of_time_queues_nothing() -> None:
    seen: list[int] = []

    async def slow(items: list[int]) -> list[int]:
        seen.extend(items)
        await asyncio.sleep(0.3)
        return items

    combiner: Combiner[int, int] = Combiner(slow, max_batch=10)

    async def hurried() -> int:
        io_deadline.set(time.monotonic() + 0.05)
        return await combiner.submit(1)

    async def patient() -> int:
        return await combiner.submit(2)

    results = await asyncio.gather(hurried(), patient(), return_exceptions=True)
    assert isinstance(results[0], StoreUnavailable)
    assert results[1] == 2  # the batch went on for the caller that could wait

    async def too_late() -> int:
        io_deadline.set(time.monotonic() - 1)
        return await combiner.submit(3)

    with pytest.raises(StoreUnavailable):
        await too_late()
    await asyncio.sleep(0.01)
    assert 3 not in seen
