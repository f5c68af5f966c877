"""The agent loop: call the model, stream its text, run the tools it asks for, repeat.

``run_agent`` is an async generator of events: ``Start``, then ``TextDelta``/``ToolCall``/``ToolResult``
as they happen, and always exactly one ``Done`` last: after an ``Error`` when the run failed, with
status ``timeout`` when the deadline passed and ``cancelled`` when ``turn.control.stop()`` was called.
Only closing the generator (task cancellation) ends it without ``Done``: then nobody is there to read it.

Client tools (``Turn.client_tools``) are offered to the model beside the agent's own tools, but the
caller runs them: when the model calls one, the step's own tools run as usual, a ``ToolCall`` is
emitted for each client call, and the run ends (``completed``) with those calls in
``Done.pending_tool_calls``; the caller answers them with ``tool`` messages in its next turn.

The model stream is read directly in the caller's task, inside ``turn.control.guard()``: the deadline
and a stop request interrupt the read at once (closing the upstream request), at no cost per item.
Tools run inside the same guard, and so does the wait for a slow reader (``control.catch_up()``):
whoever iterates this generator must not await anything else between two items, so that every wait
of the run's task is one the deadline and a stop can interrupt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentstream.core.agents import Agent
from agentstream.core.control import DeadlineReached, IdleTimeout, Interrupted, RunControl
from agentstream.core.events import (
    Done,
    DoneStatus,
    Error,
    Event,
    Metadata,
    Start,
    TextDelta,
    ToolCall,
    ToolResult,
    Usage,
)
from agentstream.core.providers._options import usable_options
from agentstream.core.providers.base import (
    Message,
    ModelProvider,
    ModelRequest,
    StepEnd,
    TextChunk,
    ToolCallRequest,
    ToolSpec,
    UsageReport,
)
from agentstream.core.telemetry import NO_OBSERVER, RunObserver
from agentstream.core.tools import BUILTIN_TOOLS, Tool, ToolFailed
from agentstream.errors import AgentStreamError

__all__ = ["Turn", "run_agent"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Turn:
    """One user message to one agent, with what the model should see before it."""

    run_id: str
    agent: Agent
    session_id: str
    user_id: str
    # None: the history already ends with the turn's input (the results of client tools)
    message: str | None
    history: Sequence[Message] = ()
    # tools the caller runs itself (see the module's docstring)
    client_tools: Sequence[ToolSpec] = ()
    # said in a ``Metadata`` event right after ``Start`` (e.g. MCP servers the run could not use)
    notice: Mapping[str, Any] | None = None
    # time.monotonic() when the request arrived: TTFT and duration are measured from here
    started: float = field(default_factory=time.monotonic)
    # the run's deadline and stop switch: stop() ends it at once with ``Done`` status ``cancelled``
    control: RunControl = field(default_factory=RunControl)
    # told of each model call and tool call (logs, metrics, traces); nothing per text delta
    observer: RunObserver = NO_OBSERVER


@dataclass(slots=True)
class _State:
    text: list[str] = field(default_factory=list)
    steps: int = 0
    usage: Usage = field(default_factory=Usage)
    first_text_at: float | None = None
    text_events: int = 0
    # seconds between consecutive text deltas of one model call (what a reader feels as stutter)
    gaps: list[float] = field(default_factory=list)


def _estimate_tokens(messages: Sequence[Message]) -> int:
    """About 4 characters a token: used only when the upstream reports no usage."""
    return max(1, sum(len(m.content) for m in messages) // 4)


async def run_agent(
    turn: Turn,
    provider: ModelProvider,
    *,
    max_steps: int,
    tools: Mapping[str, Tool] = BUILTIN_TOOLS,
) -> AsyncIterator[Event]:
    agent = turn.agent
    yield Start(run_id=turn.run_id, agent_id=agent.id, session_id=turn.session_id)
    if turn.notice:
        yield Metadata(dict(turn.notice))
    # an agent stored before the options rules may hold options they refuse: left out, and said
    options, ignored = usable_options(agent.model.provider, agent.model.options)
    if ignored:
        logger.warning("run %s: agent %s: model.options %s left out", turn.run_id, agent.id, ignored)
        yield Metadata({"options_ignored": ignored})
    state = _State()
    messages: list[Message] = [Message("system", agent.instructions), *turn.history]
    if turn.message is not None:
        messages.append(Message("user", turn.message))
    agent_tools = {name: tools[name] for name in agent.tools if name in tools}
    offered = (*(t.spec for t in agent_tools.values()), *turn.client_tools)
    client_names = {t.name for t in turn.client_tools}
    pending: list[ToolCall] = []
    status: DoneStatus = "completed"
    control = turn.control
    observer = turn.observer
    error_code: str | None = None
    try:
        while True:
            control.check()
            if state.steps >= max_steps:
                raise AgentStreamError(
                    f"the agent asked for tools {max_steps} times without answering (step limit)",
                    code="step_limit_exceeded",
                )
            state.steps += 1
            if state.steps > 1:  # progress of a multi-step run, before each further model call
                yield Metadata({"progress": {"step": state.steps, "max_steps": max_steps}})
            request = ModelRequest(
                model=agent.model.name,
                messages=tuple(messages),
                tools=offered,
                temperature=agent.model.temperature,
                max_tokens=agent.model.max_tokens,
                extra=options,
            )
            step_text: list[str] = []
            calls: list[ToolCallRequest] = []
            step_usage: Usage | None = None
            text_events = 0
            last_text_at: float | None = None
            finished = False
            finish_reason: str | None = None
            gaps = state.gaps
            observer.model_call_started(state.steps, request.model)
            events = provider.stream(request)
            try:
                async with control.guard():
                    async for event in events:
                        control.alive()
                        if isinstance(event, TextChunk):
                            if not event.text:
                                continue
                            now = time.monotonic()
                            if last_text_at is not None:
                                gaps.append(now - last_text_at)
                            elif state.first_text_at is None:
                                state.first_text_at = now
                            last_text_at = now
                            step_text.append(event.text)
                            state.text.append(event.text)
                            text_events += 1
                            state.text_events += 1
                            yield TextDelta(event.text)
                            if control.behind():
                                await control.catch_up()
                        elif isinstance(event, ToolCallRequest):
                            calls.append(event)
                        elif isinstance(event, UsageReport):
                            step_usage = event.usage
                        elif isinstance(event, StepEnd):
                            finish_reason = event.reason
                finished = True
            finally:
                aclose = getattr(events, "aclose", None)
                if aclose is not None:
                    await aclose()
                # counted also when the step was cut short (timeout, cancel, upstream failure)
                step_usage = step_usage or Usage(_estimate_tokens(messages), text_events, estimated=True)
                state.usage.add(step_usage)
                reason = finish_reason or ("tool_calls" if calls else "stop")
                observer.model_call_ended(step_usage, (reason,) if finished else ())
            if not calls:
                break
            messages.append(Message("assistant", "".join(step_text), tool_calls=tuple(calls)))
            for call in calls:
                control.check()
                tool_call = ToolCall(call.id, call.name, dict(call.arguments))
                yield tool_call
                if call.name in client_names and call.name not in agent_tools:
                    pending.append(tool_call)
                    continue
                observer.tool_started(tool_call)
                result: ToolResult | None = None
                try:
                    async with control.guard():
                        result = await _run_tool(call, agent_tools)
                finally:
                    observer.tool_ended(tool_call, result)
                yield result
                messages.append(Message("tool", result.content, tool_call_id=call.id, name=call.name))
            if pending:
                break  # the caller runs its tools and continues the conversation
    except DeadlineReached as reached:
        status = "timeout"
        if isinstance(reached, IdleTimeout):  # (the run's deadline needs no word: its clients know it)
            yield Metadata({"timeout": {"reason": "idle", "seconds": control.idle_seconds}})
    except Interrupted:
        status = "cancelled"
    except AgentStreamError as e:
        status = "error"
        error_code = e.code
        yield Error(e.message, e.code, getattr(e, "retry_after", None))
    except Exception:
        logger.exception("run %s failed", turn.run_id)
        status = "error"
        error_code = "internal_error"
        yield Error("internal error while running the agent", "internal_error")
    yield Done(
        status=status,
        final_response="".join(state.text),
        total_steps=state.steps,
        usage=state.usage,
        metrics=_metrics(turn, state),
        pending_tool_calls=tuple(pending) if status == "completed" else (),
        error_code=error_code,
    )


def _metrics(turn: Turn, state: _State) -> dict[str, int | float | None]:
    """Streaming metrics: time to first token, duration, and the output rate once text flowed."""
    now = time.monotonic()
    first = state.first_text_at
    streaming_s = None if first is None else now - first
    rate = None
    if streaming_s and streaming_s > 0 and state.usage.output_tokens:
        rate = round(state.usage.output_tokens / streaming_s, 1)
    return {
        "ttft_ms": None if first is None else round((first - turn.started) * 1000),
        "duration_ms": round((now - turn.started) * 1000),
        "content_events": state.text_events,
        "output_tokens_per_s": rate,
        "gap_p50_ms": _percentile_ms(state.gaps, 50),
        "gap_p95_ms": _percentile_ms(state.gaps, 95),
    }


def _percentile_ms(values: list[float], percent: int) -> float | None:
    """Nearest-rank percentile of seconds, in milliseconds (None without values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-percent * len(ordered) // 100))
    return round(ordered[rank - 1] * 1000, 1)


async def _run_tool(call: ToolCallRequest, tools: Mapping[str, Tool]) -> ToolResult:
    tool = tools.get(call.name)
    if tool is None:
        return ToolResult(call.id, call.name, f"unknown tool {call.name!r}", is_error=True)
    try:
        content = await tool.run(call.arguments)
    except ToolFailed as e:
        return ToolResult(call.id, call.name, f"error: {e}", is_error=True)
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("tool %s failed", call.name)
        return ToolResult(call.id, call.name, "error: the tool failed unexpectedly", is_error=True)
    return ToolResult(call.id, call.name, content)
