from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from agentstream.core.agent import Turn, run_agent
from agentstream.core.agents import Agent, ModelConfig
from agentstream.core.control import RunControl
from agentstream.core.events import Done, Error, Event, Start, TextDelta
from agentstream.core.providers.base import ToolSpec
from agentstream.core.providers.scripted import ScriptedProvider
from agentstream.core.runs import RunHandle
from agentstream.core.tools import Tool

pytestmark = pytest.mark.anyio


async def _read(run: RunHandle) -> list[tuple[int, Event]]:
    return [item async for item in run.events()]


async def test_a_failing_source_still_ends_with_error_and_one_done() -> None:
    async def broken() -> AsyncIterator[Event]:
        yield Start("r", "a", "s")
        yield TextDelta("partial")
        raise RuntimeError("a bug")

    events = await asyncio.wait_for(_read(RunHandle("r", "s", broken())), 2)
    assert [seq for seq, _ in events] == [0, 1, 2, 3]
    error, done = events[-2][1], events[-1][1]
    assert isinstance(error, Error)
    assert error.code == "internal_error"
    assert "a bug" not in error.message
    assert isinstance(done, Done)
    assert (done.status, done.final_response) == ("error", "partial")


async def test_a_slow_reader_holds_the_producer_back() -> None:
    produced = 0
    control = RunControl()

    async def fast() -> AsyncIterator[Event]:
        nonlocal produced
        for _ in range(5_000):
            produced += 1
            yield TextDelta("x")
            if control.behind():  # what the agent loop does after each text delta
                await control.catch_up()
        yield Done(status="completed", final_response="x" * 5_000, total_steps=1)

    run = RunHandle("r", "s", fast(), control=control)
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

    run = RunHandle("r", "s", source())
    run.detach()
    await asyncio.wait_for(run.wait(), 2)
    assert run.done is not None
    assert run.done.status == "completed"


def _agent(options: dict[str, object], tools: list[str] | None = None) -> Agent:
    return Agent(
        id="agt_1",
        name="t",
        model=ModelConfig(provider="scripted", name="m", options=options),
        tools=tools or [],
        created_at="now",
        updated_at="now",
    )


def _agent_run(
    options: dict[str, object], control: RunControl, tools: dict[str, Tool] | None = None
) -> RunHandle:
    agent = _agent(options, list(tools or ()))
    turn = Turn(run_id="r", agent=agent, session_id="s", user_id="u", message="2+3", control=control)
    events = run_agent(turn, ScriptedProvider(), max_steps=3, tools=tools or {})
    return RunHandle("r", "s", events, control=control)


async def _stop_after(run: RunHandle, seconds: float) -> float:
    await asyncio.sleep(seconds)
    stopped = time.monotonic()
    run.stop()
    return stopped


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"stall_after": 0}, id="before-the-first-token"),
        pytest.param({"stall_after": 3, "delay_ms": 0}, id="stalled-mid-text"),
        pytest.param({"reply": "x" * 100_000, "delta_chars": 1, "delay_ms": 0}, id="reader-not-reading"),
    ],
)
async def test_stop_ends_the_run_at_once_whatever_it_waits_for(options: dict[str, object]) -> None:
    control = RunControl()
    run = _agent_run(options, control)
    stopped = await _stop_after(run, 0.2)  # nobody reads meanwhile: the outbox fills up
    events = await asyncio.wait_for(_read(run), 2)
    done = events[-1][1]
    assert isinstance(done, Done)
    assert done.status == "cancelled"
    assert done.final_response == "".join(e.text for _, e in events if isinstance(e, TextDelta))
    assert [seq for seq, _ in events] == list(range(len(events)))
    await asyncio.wait_for(run.wait(), 1)
    assert time.monotonic() - stopped < 1.0
    if "reply" in options:  # backpressure held the model back: far from the whole reply
        assert len(done.final_response) < 10_000


async def test_stop_interrupts_a_slow_tool_and_the_deadline_a_stalled_model() -> None:
    async def slow(arguments: object) -> str:
        await asyncio.sleep(30)
        return "never"

    calculator = Tool(ToolSpec("calculator", "slow", {"type": "object"}), slow)
    control = RunControl()
    run = _agent_run({}, control, {"calculator": calculator})
    await _stop_after(run, 0.2)
    events = await asyncio.wait_for(_read(run), 2)
    assert [type(e).__name__ for _, e in events] == ["Start", "ToolCall", "Done"]
    assert isinstance(events[-1][1], Done)
    assert events[-1][1].status == "cancelled"

    run = _agent_run({"stall_after": 2, "delay_ms": 0}, RunControl(time.monotonic() + 0.3))
    events = await asyncio.wait_for(_read(run), 2)
    assert isinstance(events[-1][1], Done)
    assert (events[-1][1].status, events[-1][1].final_response) == ("timeout", "You sa")
