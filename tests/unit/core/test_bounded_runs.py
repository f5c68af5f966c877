"""Every run has a bounded life: the idle limit (nothing from the model or a tool for that long), the
run's deadline, whatever the agent's options, with or without a reader."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentstream.config import Settings
from agentstream.core.agent import Turn, run_agent
from agentstream.core.agents import Agent, ModelConfig
from agentstream.core.control import DeadlineReached, IdleTimeout, RunControl
from agentstream.core.events import Done, Metadata, TextDelta
from agentstream.core.providers.base import ModelRequest, ProviderEvent, StepEnd, TextChunk
from agentstream.core.providers.scripted import ScriptedProvider
from agentstream.core.service import ChatInput, ChatService
from tests.support.memory_store import MemoryStore

pytestmark = pytest.mark.anyio


async def test_a_silent_wait_ends_at_the_idle_limit() -> None:
    control = RunControl(idle_seconds=0.2)
    started = time.monotonic()
    with pytest.raises(IdleTimeout):
        async with control.guard():
            await asyncio.sleep(10)
    assert 0.15 < time.monotonic() - started < 2


async def test_signs_of_life_keep_a_run_going_past_the_idle_limit() -> None:
    control = RunControl(idle_seconds=0.6)
    started = time.monotonic()
    async with control.guard():
        for _ in range(10):  # 1 s in all, never 0.6 s without a sign of life
            await asyncio.sleep(0.1)
            control.alive()
    assert time.monotonic() - started >= 1.0


async def test_the_deadline_still_comes_first_when_it_is_sooner() -> None:
    control = RunControl(time.monotonic() + 0.2, idle_seconds=5)
    with pytest.raises(DeadlineReached) as caught:
        async with control.guard():
            await asyncio.sleep(10)
    assert type(caught.value) is DeadlineReached


async def test_the_guard_leaves_no_watcher_behind() -> None:
    control = RunControl(idle_seconds=0.1)
    async with control.guard():
        await asyncio.sleep(0)
    await asyncio.sleep(0.3)  # a watcher left behind would reschedule a finished timeout: no error
    async with control.guard():
        await asyncio.sleep(0.05)


def _agent(options: dict[str, Any]) -> Agent:
    model = ModelConfig(provider="scripted", name="s", options=options)
    return Agent(id="agt_1", name="a", model=model, created_at="", updated_at="")


class _Trickle:
    """A model that sends a character every 0.1 s for 1 s: slow, but alive."""

    async def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
        for _ in range(10):
            await asyncio.sleep(0.1)
            yield TextChunk("x")
        yield StepEnd("stop")


async def test_a_stalled_model_ends_the_run_as_timeout_with_one_done_and_says_why() -> None:
    control = RunControl(idle_seconds=0.3)
    turn = Turn(
        "r", _agent({"reply": "abcdef", "stall_after": 1, "delay_ms": 0}), "s", "u", "hi", control=control
    )
    started = time.monotonic()
    events = [e async for e in run_agent(turn, ScriptedProvider(stall_seconds=3_600), max_steps=2)]
    assert time.monotonic() - started < 3
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["abc"]
    assert [e.data for e in events if isinstance(e, Metadata)] == [
        {"timeout": {"reason": "idle", "seconds": 0.3}}
    ]
    assert [type(e) for e in events].count(Done) == 1
    done = events[-1]
    assert isinstance(done, Done)
    assert (done.status, done.final_response) == ("timeout", "abc")


async def test_a_slow_model_that_keeps_sending_is_not_idle() -> None:
    control = RunControl(idle_seconds=0.6)
    turn = Turn("r", _agent({}), "s", "u", "hi", control=control)
    events = [e async for e in run_agent(turn, _Trickle(), max_steps=2)]
    done = events[-1]
    assert isinstance(done, Done)
    assert (done.status, done.final_response) == ("completed", "x" * 10)


def _service(options: dict[str, Any], **settings: Any) -> tuple[ChatService, MemoryStore]:
    store = MemoryStore()
    store.agents.items[("t", "agt_1")] = _agent(options)
    values: dict[str, Any] = {"log_flush_seconds": 0.05, "heartbeat_seconds": 0.05, **settings}
    return ChatService(store, Settings(**values)), store


@pytest.mark.parametrize(
    ("options", "settings"),
    [
        pytest.param({"stall_after": 1}, {"idle_timeout_seconds": 0.4}, id="stalled-idle-limit"),
        pytest.param(
            {"reply": "x" * 1000, "delta_chars": 1, "delay_ms": 200},
            {"max_run_seconds": 1.5, "deadline_margin_ms": 500},
            id="slow-reply-max-run-seconds",
        ),
    ],
)
async def test_a_run_nobody_reads_any_more_still_ends_by_itself(
    options: dict[str, Any], settings: dict[str, Any]
) -> None:
    """What ``on_disconnect: continue`` leaves: a detached run, bounded all the same."""
    chat, store = _service(options, **settings)
    started = time.monotonic()
    run = await chat.start("t", "agt_1", ChatInput("hi"))
    run.detach()
    await asyncio.wait_for(run.wait(), 5)
    assert time.monotonic() - started < 4
    assert run.done is not None
    assert run.done.status == "timeout"
    assert store.runs.records[("t", run.run_id)].status == "timeout"
