"""ChatService under per-tenant limits: checked beside the agent's read, refused starts leave nothing,
and every run gives its place back when it ends, whatever the way."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from agentstream.config import Settings
from agentstream.core.agents import Agent, ModelConfig
from agentstream.core.events import Done
from agentstream.core.providers import ModelChoice
from agentstream.core.providers.base import ModelProvider, ToolSpec
from agentstream.core.runs import RunHandle
from agentstream.core.service import ChatInput, ChatService
from agentstream.errors import BadRequest, NotFound, RateLimited
from tests.support.memory_store import MemoryStore

pytestmark = pytest.mark.anyio


def _settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "log_flush_seconds": 0.05,
        "heartbeat_seconds": 0.05,
        "rate_limit_per_minute": 100,
        "max_concurrent_runs": 2,
        **overrides,
    }
    return Settings(**values)


def _store(**options: Any) -> MemoryStore:
    store = MemoryStore()
    model = ModelConfig(provider="scripted", name="s", options={"reply": "hello there", **options})
    for tenant in ("t", "u"):
        store.agents.items[(tenant, "agt_1")] = Agent(
            id="agt_1", name="a", model=model, created_at="", updated_at="", tools=["calculator"]
        )
    return store


async def _finish(run: RunHandle) -> Done:
    events = [e async for _, e in run.events()]
    await run.wait()
    assert isinstance(events[-1], Done)
    return events[-1]


def _running(store: MemoryStore, tenant: str = "t") -> set[str]:
    return set(store.limits.running.get(tenant, {}))


async def test_over_the_concurrency_limit_a_start_is_refused_and_leaves_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="agentstream.core.service")
    store = _store(stall_after=1)
    chat = ChatService(store, _settings())
    first = await chat.start("t", "agt_1", ChatInput("hi"))
    second = await chat.start("t", "agt_1", ChatInput("hi", session_id="c2", resumable=True))
    assert _running(store) == {first.run_id, second.run_id}
    with pytest.raises(RateLimited) as refused:
        await chat.start("t", "agt_1", ChatInput("hi", session_id="c3", resumable=True))
    assert (refused.value.status, refused.value.code) == (429, "rate_limited")
    assert 1 <= refused.value.retry_after <= 5
    assert "tenant t refused a run: at most 2 runs" in caplog.text  # what the operator sees
    # no run record, no ACTIVE pointer, no provider call, no count of the minute
    assert {run_id for _, run_id in store.runs.records} == {first.run_id, second.run_id}
    assert ("t", "agt_1", "c3") not in store.active_runs.pointers
    assert sum(store.limits.starts.values()) == 2
    # another tenant is not refused
    other = await chat.start("u", "agt_1", ChatInput("hi"))
    other.stop()
    await _finish(other)
    # a stopped run gives its slot back, and the next start gets it
    first.stop()
    assert (await _finish(first)).status == "cancelled"
    assert _running(store) == {second.run_id}
    third = await chat.start("t", "agt_1", ChatInput("hi"))
    for run in (second, third):
        run.stop()
        await _finish(run)
    assert _running(store) == set()


async def test_the_limits_are_checked_beside_the_agents_read() -> None:
    store = _store()
    store.agents.latency = 0.2
    store.limits.latency = 0.2
    store.runs.latency = 0.2
    chat = ChatService(store, _settings(log_flush_seconds=5, heartbeat_seconds=5))
    started = time.monotonic()
    run = await chat.start("t", "agt_1", ChatInput("hi"))
    # two round trips (agent + limits, then the run record and the rest), not three
    assert time.monotonic() - started < 0.55
    await _finish(run)


async def test_every_end_gives_the_slot_back_and_a_run_counts_once() -> None:
    store = _store(delay_ms=1)
    chat = ChatService(store, _settings(max_concurrent_runs=1))
    for options in ({}, {"fail_after": 1}):
        store.agents.items[("t", "agt_1")].model.options.update(options)
        done = await _finish(await chat.start("t", "agt_1", ChatInput("hi")))
        assert done.status in ("completed", "error")
        assert _running(store) == set()
    assert store.limits.calls == ["acquire", "release", "acquire", "release"]
    assert sum(store.limits.starts.values()) == 2


async def test_the_minute_limit_refuses_with_the_seconds_to_the_next_minute() -> None:
    store = _store(delay_ms=1)
    chat = ChatService(store, _settings(rate_limit_per_minute=2, max_concurrent_runs=0))
    for _ in range(2):
        await _finish(await chat.start("t", "agt_1", ChatInput("hi")))
    with pytest.raises(RateLimited) as refused:
        await chat.start("t", "agt_1", ChatInput("hi"))
    assert 1 <= refused.value.retry_after <= 60
    assert len(store.runs.records) == 2


async def test_a_start_that_fails_after_its_slot_gives_slot_and_count_back() -> None:
    store = _store()

    async def broken(model: ModelChoice, settings: Settings) -> ModelProvider:
        raise RuntimeError("no provider")

    chat = ChatService(store, _settings(), providers=broken)
    with pytest.raises(RuntimeError):
        await chat.start("t", "agt_1", ChatInput("hi"))
    with pytest.raises(NotFound):
        await chat.start("t", "agt_404", ChatInput("hi"))
    with pytest.raises(BadRequest):
        await chat.start("t", "agt_1", ChatInput("hi", client_tools=[ToolSpec("calculator", "", {})]))
    assert store.limits.calls == ["acquire", "release_unstarted"] * 3
    assert _running(store) == set()
    assert sum(store.limits.starts.values()) == 0


async def test_no_limits_no_limiter_call() -> None:
    store = _store(delay_ms=1)
    chat = ChatService(store, _settings(rate_limit_per_minute=0, max_concurrent_runs=0))
    for _ in range(3):
        await _finish(await chat.start("t", "agt_1", ChatInput("hi")))
    assert store.limits.calls == []


async def test_a_run_cancelled_outright_still_gives_its_slot_back() -> None:
    store = _store(stall_after=1)
    chat = ChatService(store, _settings(max_concurrent_runs=1))
    run = await chat.start("t", "agt_1", ChatInput("hi"))
    run.cancel()  # the producer task itself: no Done, no after-done work
    await run.wait()
    for _ in range(50):
        if not _running(store):
            break
        await asyncio.sleep(0.01)
    assert _running(store) == set()
