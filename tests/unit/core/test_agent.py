from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace

import pytest

from agentstream.core.agent import Turn, run_agent
from agentstream.core.agents import Agent, ModelConfig
from agentstream.core.control import RunControl
from agentstream.core.events import (
    Done,
    Error,
    Event,
    Start,
    TextDelta,
    ToolCall,
    ToolResult,
    Usage,
    event_to_dict,
)
from agentstream.core.providers.base import (
    Message,
    ModelRequest,
    ProviderEvent,
    StepEnd,
    TextChunk,
    ToolCallRequest,
    ToolSpec,
    UsageReport,
)
from agentstream.errors import UpstreamError

Step = Sequence[ProviderEvent | float | Exception]  # a float is a pause in seconds


@dataclass
class FakeProvider:
    """Plays one scripted step per model call and records requests and closes."""

    steps: list[Step]
    requests: list[ModelRequest] = field(default_factory=list)
    closed: int = 0

    async def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
        self.requests.append(request)
        step = self.steps[len(self.requests) - 1]
        try:
            for item in step:
                if isinstance(item, float):
                    await asyncio.sleep(item)
                elif isinstance(item, Exception):
                    raise item
                else:
                    yield item
        finally:
            self.closed += 1


def _agent(tools: list[str] | None = None) -> Agent:
    return Agent(
        id="agt_1",
        name="t",
        model=ModelConfig(provider="scripted", name="m"),
        tools=tools or [],
        created_at="now",
        updated_at="now",
    )


def _turn(agent: Agent, deadline: float | None = None) -> Turn:
    return Turn(
        run_id="run_1", agent=agent, session_id="s", user_id="u", message="hi", control=RunControl(deadline)
    )


async def _run(provider: FakeProvider, agent: Agent, **kwargs: float | None) -> list[Event]:
    return [e async for e in run_agent(_turn(agent, **kwargs), provider, max_steps=3)]


@pytest.mark.anyio
async def test_text_streams_and_ends_with_done() -> None:
    provider = FakeProvider([[TextChunk("Hel"), TextChunk("lo"), UsageReport(Usage(5, 2)), StepEnd("stop")]])
    events = await _run(provider, _agent())
    assert isinstance(events[0], Start)
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hel", "lo"]
    done = events[-1]
    assert isinstance(done, Done)
    assert (done.status, done.final_response, done.total_steps) == ("completed", "Hello", 1)
    assert done.usage == Usage(5, 2)
    assert done.metrics["ttft_ms"] is not None
    assert done.metrics["content_events"] == 2
    assert provider.requests[0].messages[0].role == "system"
    assert provider.requests[0].messages[-1].content == "hi"


@pytest.mark.anyio
async def test_tool_round_trip_counts_two_steps_and_feeds_the_result_back() -> None:
    provider = FakeProvider(
        [
            [ToolCallRequest("c1", "calculator", {"expression": "2+3"}), StepEnd("tool_calls")],
            [TextChunk("It is 5."), StepEnd("stop")],
        ]
    )
    events = await _run(provider, _agent(["calculator"]))
    call = next(e for e in events if isinstance(e, ToolCall))
    result = next(e for e in events if isinstance(e, ToolResult))
    assert (call.name, call.arguments) == ("calculator", {"expression": "2+3"})
    assert (result.id, result.content, result.is_error) == ("c1", "5", False)
    done = events[-1]
    assert isinstance(done, Done)
    assert done.total_steps == 2
    assert done.final_response == "It is 5."
    second = provider.requests[1].messages
    assert second[-2].tool_calls[0].id == "c1"
    assert (second[-1].role, second[-1].content, second[-1].tool_call_id) == ("tool", "5", "c1")
    assert provider.requests[0].tools[0].name == "calculator"


@pytest.mark.anyio
async def test_tool_errors_go_back_to_the_model_not_to_the_user() -> None:
    provider = FakeProvider(
        [
            [ToolCallRequest("c1", "calculator", {"expression": "1/0"}), StepEnd("tool_calls")],
            [ToolCallRequest("c2", "not_a_tool", {}), StepEnd("tool_calls")],
            [TextChunk("sorry"), StepEnd("stop")],
        ]
    )
    events = await _run(provider, _agent(["calculator"]))
    results = [e for e in events if isinstance(e, ToolResult)]
    assert [r.is_error for r in results] == [True, True]
    assert "division by zero" in results[0].content
    assert isinstance(events[-1], Done)
    assert events[-1].status == "completed"


@pytest.mark.anyio
async def test_step_limit_ends_with_error_then_done() -> None:
    loop_step: Step = [ToolCallRequest("c", "calculator", {"expression": "1+1"}), StepEnd("tool_calls")]
    provider = FakeProvider([loop_step] * 5)
    events = await _run(provider, _agent(["calculator"]))
    assert isinstance(events[-2], Error)
    assert events[-2].code == "step_limit_exceeded"
    assert isinstance(events[-1], Done)
    assert (events[-1].status, events[-1].total_steps) == ("error", 3)


@pytest.mark.anyio
async def test_upstream_failure_mid_stream_keeps_the_text_and_ends_cleanly() -> None:
    provider = FakeProvider([[TextChunk("partial "), UpstreamError("upstream model failed: HTTP 500")]])
    events = await _run(provider, _agent())
    assert [type(e).__name__ for e in events] == ["Start", "TextDelta", "Error", "Done"]
    error, done = events[-2], events[-1]
    assert isinstance(error, Error)
    assert (error.code, error.message) == ("upstream_error", "upstream model failed: HTTP 500")
    assert isinstance(done, Done)
    assert (done.status, done.final_response) == ("error", "partial ")
    assert provider.closed == 1


@pytest.mark.anyio
async def test_a_bug_in_a_provider_is_an_internal_error_without_details() -> None:
    provider = FakeProvider([[KeyError("secret-ish detail")]])
    events = await _run(provider, _agent())
    error = events[-2]
    assert isinstance(error, Error)
    assert error.code == "internal_error"
    assert "secret" not in error.message
    assert isinstance(events[-1], Done)


@pytest.mark.anyio
async def test_deadline_ends_the_run_with_timeout_and_what_was_said() -> None:
    provider = FakeProvider([[TextChunk("so far"), 5.0, TextChunk("never")]])
    start = time.monotonic()
    events = await _run(provider, _agent(), deadline=start + 0.3)
    assert time.monotonic() - start < 2
    done = events[-1]
    assert isinstance(done, Done)
    assert (done.status, done.final_response) == ("timeout", "so far")
    assert (done.usage.output_tokens, done.usage.estimated) == (1, True)  # the cut step still counts
    assert provider.closed == 1


@pytest.mark.anyio
async def test_closing_the_run_closes_the_provider_stream() -> None:
    provider = FakeProvider([[TextChunk("a"), 10.0, TextChunk("b")]])
    run = run_agent(_turn(_agent()), provider, max_steps=3)
    assert isinstance(await anext(run), Start)
    assert isinstance(await anext(run), TextDelta)
    task = asyncio.ensure_future(anext(run))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert provider.closed == 1


WEATHER = ToolSpec(
    "get_weather", "the weather", {"type": "object", "properties": {"city": {"type": "string"}}}
)


@pytest.mark.anyio
async def test_a_client_tool_call_ends_the_run_after_the_agents_own_tools_ran() -> None:
    provider = FakeProvider(
        [
            [
                TextChunk("Checking. "),
                ToolCallRequest("c1", "calculator", {"expression": "2+3"}),
                ToolCallRequest("c2", "get_weather", {"city": "Paris"}),
                StepEnd("tool_calls"),
            ],
        ]
    )
    turn = replace(_turn(_agent(["calculator"])), client_tools=[WEATHER])
    events = [e async for e in run_agent(turn, provider, max_steps=3)]
    assert [t.name for t in provider.requests[0].tools] == ["calculator", "get_weather"]
    assert [type(e).__name__ for e in events] == [
        "Start",
        "TextDelta",
        "ToolCall",
        "ToolResult",
        "ToolCall",
        "Done",
    ]
    done = events[-1]
    assert isinstance(done, Done)
    assert (done.status, done.final_response, done.total_steps) == ("completed", "Checking. ", 1)
    assert done.pending_tool_calls == (ToolCall("c2", "get_weather", {"city": "Paris"}),)
    assert event_to_dict(done)["pending_tool_calls"] == [
        {"tool_call_id": "c2", "tool_name": "get_weather", "arguments": {"city": "Paris"}}
    ]


@pytest.mark.anyio
async def test_a_turn_of_tool_results_continues_the_given_conversation() -> None:
    provider = FakeProvider([[TextChunk("Sunny."), StepEnd("stop")]])
    history = [
        Message("user", "Weather?"),
        Message("assistant", "", tool_calls=(ToolCallRequest("c2", "get_weather", {"city": "Paris"}),)),
        Message("tool", "sunny", tool_call_id="c2", name="get_weather"),
    ]
    turn = replace(_turn(_agent()), message=None, history=history, client_tools=[WEATHER])
    events = [e async for e in run_agent(turn, provider, max_steps=3)]
    sent = provider.requests[0].messages
    assert [m.role for m in sent] == ["system", "user", "assistant", "tool"]  # no user message appended
    done = events[-1]
    assert isinstance(done, Done)
    assert (done.final_response, done.pending_tool_calls) == ("Sunny.", ())
    assert "pending_tool_calls" not in event_to_dict(done)  # the done payload of other runs is unchanged
