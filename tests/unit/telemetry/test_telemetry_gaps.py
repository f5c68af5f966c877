"""done.metrics' inter-chunk gaps: what a reader feels as stutter, p50 and p95 of one run."""

from __future__ import annotations

from typing import Any

import pytest

from agentstream.config import Settings
from agentstream.core.agent import _percentile_ms
from agentstream.core.agents import Agent, ModelConfig
from agentstream.core.events import Done
from agentstream.core.service import ChatInput, ChatService
from tests.support.memory_store import MemoryStore

pytestmark = pytest.mark.anyio


def test_percentiles_are_nearest_rank_in_milliseconds() -> None:
    seconds = [i / 1000 for i in range(1, 101)]  # 1 ms .. 100 ms
    assert _percentile_ms(seconds, 50) == 50.0
    assert _percentile_ms(seconds, 95) == 95.0
    assert _percentile_ms([0.02], 95) == 20.0
    assert _percentile_ms([], 50) is None


async def _done(**options: Any) -> Done:
    store = MemoryStore()
    model = ModelConfig(provider="scripted", name="s", options=options)
    store.agents.items[("t", "agt_1")] = Agent(
        id="agt_1", name="a", model=model, created_at="", updated_at=""
    )
    chat = ChatService(store, Settings(log_flush_seconds=0.05, heartbeat_seconds=0.05))
    run = await chat.start("t", "agt_1", ChatInput("hi"))
    events = [e async for _, e in run.events()]
    await run.wait()
    done = events[-1]
    assert isinstance(done, Done)
    return done, store.runs.records[("t", run.run_id)].metrics


async def test_a_paced_stream_reports_its_pace_and_the_metrics_reach_the_run_record() -> None:
    done, recorded = await _done(reply="abcdefghij" * 3, delta_chars=3, delay_ms=40)  # 10 deltas, 40 ms apart
    p50, p95 = done.metrics["gap_p50_ms"], done.metrics["gap_p95_ms"]
    assert isinstance(p50, float)
    assert isinstance(p95, float)
    assert 30 <= p50 <= p95 < 1_000, done.metrics
    assert recorded == done.metrics


async def test_one_delta_has_no_gap() -> None:
    done, _ = await _done(reply="short", delta_chars=100, delay_ms=0)
    assert done.metrics["gap_p50_ms"] is None
    assert done.metrics["gap_p95_ms"] is None
