from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from agentstream.core.events import Done, Error, Event, Start, TextDelta
from agentstream.core.runs import RunHandle

pytestmark = pytest.mark.anyio


async def _read(run: RunHandle) -> list[tuple[int, Event]]:
    return [item async for item in run.events()]


async def test_a_failing_source_still_ends_with_error_and_one_done() -> None:
    async def broken() -> AsyncIterator[Event]:
        yield Start("r", "a", "s")
        yield TextDelta("partial")
        raise RuntimeError("a bug")

    events = await asyncio.wait_for(_read(RunHandle("r", "s", broken(), stop=asyncio.Event())), 2)
    assert [seq for seq, _ in events] == [0, 1, 2, 3]
    error, done = events[-2][1], events[-1][1]
    assert isinstance(error, Error)
    assert error.code == "internal_error"
    assert "a bug" not in error.message
    assert isinstance(done, Done)
    assert (done.status, done.final_response) == ("error", "partial")


async def test_a_slow_reader_holds_the_producer_back() -> None:
    produced = 0

    async def fast() -> AsyncIterator[Event]:
        nonlocal produced
        for _ in range(5_000):
            produced += 1
            yield TextDelta("x")
        yield Done(status="completed", final_response="x" * 5_000, total_steps=1)

    run = RunHandle("r", "s", fast(), stop=asyncio.Event())
    await asyncio.sleep(0.2)
    assert produced < 300  # bounded by the queue, not by the source
    events = await _read(run)
    assert len(events) == 5_001
    assert produced == 5_000


async def test_a_detached_run_finishes_without_a_reader() -> None:
    async def source() -> AsyncIterator[Event]:
        for _ in range(1_000):
            yield TextDelta("x")
        yield Done(status="completed", final_response="x" * 1_000, total_steps=1)

    run = RunHandle("r", "s", source(), stop=asyncio.Event())
    run.detach()
    await asyncio.wait_for(run.wait(), 2)
    assert run.done is not None
    assert run.done.status == "completed"
