from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Sequence

import pytest

from agentstream.core.chunking import Regrouper, split_text
from agentstream.core.events import Done, Event, TextDelta
from agentstream.core.runs import RunHandle

TEXTS = [
    "Hello, world! This is plain ASCII.",
    "你好，世界！这是一个测试。",
    "emoji 👍🏽 family 👨‍👩‍👧‍👦 flag 🇨🇳 keycap 1️⃣ done",
    "combining: e\u0301 a\u0300 n\u0303 Z\u0351\u0352\u0353 and Hangul \u1100\u1161\u11a8",
    "mixed 混合 text with 🙂 and ö and ñ 😀😃😄",
]


async def _source(deltas: Sequence[str], gap: float = 0.0) -> AsyncIterator[Event]:
    for d in deltas:
        if gap:
            await asyncio.sleep(gap)
        yield TextDelta(d)
    yield Done(status="completed", final_response="".join(deltas), total_steps=1)


async def _collect(events: AsyncIterator[Event], size: int) -> list[Event]:
    """The events a run with ``chunk_size`` ``size`` streams for this source (regrouping is the run's)."""
    run = RunHandle("r", "s", events, chunk_size=size, flush_seconds=0.05)
    return [e async for _, e in run.events()]


def _random_deltas(text: str, rng: random.Random) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), k=min(len(text) - 1, rng.randint(0, 8))))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 10, 1000])
@pytest.mark.parametrize("text", TEXTS)
def test_split_text_is_exact_and_bounded(text: str, size: int) -> None:
    pieces, rest = split_text(text, size)
    assert "".join(pieces) + rest == text
    assert all(0 < len(p) <= size for p in pieces)
    assert len(rest) < size


def test_split_text_keeps_modifiers_with_their_base_when_it_can() -> None:
    pieces, rest = split_text("ae\u0301b", 2)  # cutting after 'e' would orphan the accent
    assert pieces == ["a", "e\u0301"]
    assert rest == "b"
    pieces, rest = split_text("👍🏽x", 1)  # a piece of 1 cannot hold both: split anyway, never lose text
    assert "".join(pieces) + rest == "👍🏽x"


@pytest.mark.anyio
@pytest.mark.parametrize("size", [0, 1, 3, 10])
@pytest.mark.parametrize("text", TEXTS)
async def test_regroup_is_exact_for_any_split(text: str, size: int) -> None:
    rng = random.Random(f"{text}-{size}")
    for _ in range(5):
        deltas = _random_deltas(text, rng)
        events = await _collect(_source(deltas), size)
        contents = [e.text for e in events if isinstance(e, TextDelta)]
        assert "".join(contents) == text
        assert isinstance(events[-1], Done)
        if size:
            assert all(0 < len(c) <= size for c in contents)
        else:
            assert contents == [d for d in deltas if d]


@pytest.mark.anyio
async def test_regroup_flushes_held_text_within_the_interval() -> None:
    """A short piece must not wait for more text: it leaves after the flush interval."""
    received: list[tuple[float, str]] = []

    async def slow() -> AsyncIterator[Event]:
        yield TextDelta("ab")
        await asyncio.sleep(1.0)
        yield TextDelta("cd")

    start = time.monotonic()
    async for _, event in RunHandle("r", "s", slow(), chunk_size=10, flush_seconds=0.05).events():
        if isinstance(event, TextDelta):
            received.append((time.monotonic() - start, event.text))
    assert [t for _, t in received] == ["ab", "cd"]
    assert received[0][0] < 0.5  # flushed long before the next delta (1 s later)


@pytest.mark.anyio
async def test_a_cancelled_run_closes_its_source() -> None:
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[Event]:
        try:
            while True:
                yield TextDelta("x")
                await asyncio.sleep(0.01)
        finally:
            closed.set()

    run = RunHandle("r", "s", endless(), chunk_size=3, flush_seconds=0.05)
    assert await run.take()
    run.cancel()
    await asyncio.wait_for(closed.wait(), 1)


def test_regrouper_holds_only_a_short_rest() -> None:
    regroup = Regrouper(4)
    assert regroup.feed("ab") == []
    assert regroup.feed("cdefghij") == ["abcd", "efgh"]
    assert regroup.flush() == "ij"
    assert regroup.flush() == ""
