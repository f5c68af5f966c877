"""ChatService and the run log writer over the in-memory store: no moto, no HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentstream.config import Settings
from agentstream.core.agents import Agent, MemoryConfig, ModelConfig
from agentstream.core.events import Done, Event, TextDelta
from agentstream.core.ports import HistoryMessage, MemoryItem
from agentstream.core.providers import ModelChoice
from agentstream.core.providers.base import (
    Message,
    ModelProvider,
    ModelRequest,
    ProviderEvent,
    ToolCallRequest,
    ToolSpec,
)
from agentstream.core.providers.scripted import ScriptedProvider
from agentstream.core.runs import RunHandle
from agentstream.core.service import ChatInput, ChatService
from agentstream.errors import BadRequest
from tests.support.memory_store import MemoryStore

pytestmark = pytest.mark.anyio

REPLY = "流式回答，一个字一个字地来。Streamed 🙂 exactly."


def _settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"log_flush_seconds": 0.05, "heartbeat_seconds": 0.05, **overrides}
    return Settings(**values)


def _store(options: dict[str, Any] | None = None, **agent: Any) -> MemoryStore:
    store = MemoryStore()
    model = ModelConfig(
        provider="scripted", name="s", options={"reply": REPLY, "delay_ms": 5, **(options or {})}
    )
    store.agents.items[("t", "agt_1")] = Agent(
        id="agt_1", name="a", model=model, created_at="", updated_at="", **agent
    )
    return store


async def _read(run: RunHandle) -> list[tuple[int, Event]]:
    return [item async for item in run.events()]


def _text(events: list[tuple[int, Event]]) -> str:
    return "".join(e.text for _, e in events if isinstance(e, TextDelta))


async def test_a_turn_streams_logs_and_keeps_history_after_done() -> None:
    store = _store()
    store.memories.items[("t", "agt_1", "u")] = [MemoryItem("mem_1", "likes tea", "")]
    chat = ChatService(store, _settings())
    run = await chat.start("t", "agt_1", ChatInput("hi", user_id="u"))
    events = await _read(run)
    done = events[-1][1]
    assert isinstance(done, Done)
    assert (done.status, done.final_response, done.memories_count) == ("completed", REPLY, 1)
    assert done.memories_updated
    assert _text(events) == REPLY
    await run.wait()
    # the log is the live stream, event for event, and the record is final
    assert [(seq, e["chunk_type"]) for seq, e in store.runs.events("t", run.run_id)] == [
        (seq, type(e).__name__.lower().replace("textdelta", "content")) for seq, e in events
    ]
    record = store.runs.records[("t", run.run_id)]
    assert (record.status, record.last_seq, record.log_complete) == ("completed", len(events) - 1, True)
    assert record.deadline_at is not None
    history = store.conversations.messages[("t", "agt_1", "u", "default")]
    assert [(m.role, m.content) for m in history] == [("user", "hi"), ("assistant", REPLY)]


async def test_two_round_trips_before_the_model_and_none_between_the_last_token_and_done() -> None:
    store = _store()
    store.runs.latency = 0.2  # every run-log call is slow
    chat = ChatService(store, _settings(log_flush_seconds=5, heartbeat_seconds=5))
    started = time.monotonic()
    run = await chat.start("t", "agt_1", ChatInput("hi"))
    assert time.monotonic() - started < 0.35  # the run record was written beside the other reads
    last_token = done_at = 0.0
    async for _, event in run.events():
        if isinstance(event, TextDelta):
            last_token = time.monotonic()
        elif isinstance(event, Done):
            done_at = time.monotonic()
    assert done_at - last_token < 0.1  # done does not wait for the log, the record or the history
    await run.wait()
    assert store.runs.records[("t", run.run_id)].status == "completed"


async def test_a_failed_flush_is_retried_first_and_the_log_stays_exact() -> None:
    for after_write in (False, True):  # the write failed, or it landed and only the answer was lost
        store = _store({"delta_chars": 2})
        store.runs.fail_appends, store.runs.fail_after_write = 2, after_write
        chat = ChatService(store, _settings())
        run = await chat.start("t", "agt_1", ChatInput("hi"))
        events = await _read(run)
        await run.wait()
        logged = store.runs.events("t", run.run_id)
        assert [seq for seq, _ in logged] == [seq for seq, _ in events] == list(range(len(events)))
        assert "".join(e["content"] for _, e in logged if e["chunk_type"] == "content") == REPLY
        assert store.runs.records[("t", run.run_id)].log_complete


async def test_a_log_that_cannot_be_completed_is_marked_so() -> None:
    store = _store()
    store.runs.fail_appends = 1_000
    chat = ChatService(store, _settings())
    run = await chat.start("t", "agt_1", ChatInput("hi"))
    events = await _read(run)
    assert isinstance(events[-1][1], Done)
    assert events[-1][1].status == "completed"  # the live stream is unharmed
    await run.wait()
    record = store.runs.records[("t", run.run_id)]
    assert (record.status, record.log_complete) == ("completed", False)


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"stall_after": 0}, id="waiting-for-the-first-token"),
        pytest.param({"stall_after": 4, "delay_ms": 0}, id="stalled-upstream"),
        pytest.param({"delta_chars": 1, "delay_ms": 40}, id="mid-text"),
    ],
)
async def test_a_cancel_recorded_elsewhere_lands_through_the_heartbeat(options: dict[str, Any]) -> None:
    store = _store(options)
    chat = ChatService(store, _settings(heartbeat_seconds=0.2))
    run = await chat.start("t", "agt_1", ChatInput("hi"))
    await asyncio.sleep(0.3)
    # as another instance would: only the record changes, this process's handle is not told
    store.runs.records[("t", run.run_id)].cancel_requested = True
    flagged = time.monotonic()
    events = await asyncio.wait_for(_read(run), 2)
    done = events[-1][1]
    assert isinstance(done, Done)
    assert done.status == "cancelled"
    assert time.monotonic() - flagged < 0.5
    assert done.final_response == _text(events)
    await run.wait()
    assert store.runs.records[("t", run.run_id)].status == "cancelled"


async def test_the_run_ends_before_the_invocation_even_with_a_slow_store() -> None:
    store = _store({"stall_after": 2})
    chat = ChatService(store, _settings(deadline_margin_ms=500, heartbeat_seconds=0.1))
    end = time.monotonic() + 1.5
    run = await chat.start("t", "agt_1", ChatInput("hi"), invocation_deadline=end)
    store.runs.latency = 5.0  # the store turns slow once the run is under way
    events = await asyncio.wait_for(_read(run), 3)
    done = events[-1][1]
    assert isinstance(done, Done)
    assert done.status == "timeout"
    assert time.monotonic() < end - 0.3  # done with the deadline's margin to spare
    await run.wait()
    assert time.monotonic() < end  # and the book-keeping gave up in time


async def test_memory_off_reports_no_memories_and_failing_history_is_no_error_event() -> None:
    store = _store(memory=MemoryConfig(enabled=False))
    chat = ChatService(store, _settings())
    run = await chat.start("t", "agt_1", ChatInput("hi"))
    events = await _read(run)
    done = events[-1][1]
    assert isinstance(done, Done)
    assert (done.memories_updated, done.memories_count) == (False, 0)

    store = _store()
    store.conversations.fail = True
    chat = ChatService(store, _settings())
    run = await chat.start("t", "agt_1", ChatInput("hi"))
    events = await _read(run)
    assert [type(e).__name__ for _, e in events if not isinstance(e, TextDelta)] == ["Start", "Done"]
    await run.wait()  # the failure is logged; the run itself completed
    assert store.runs.records[("t", run.run_id)].status == "completed"


async def test_a_provider_that_fails_to_start_leaves_no_running_record() -> None:
    store = _store()

    async def broken(model: ModelChoice, settings: Settings) -> ModelProvider:
        raise RuntimeError("no provider")

    chat = ChatService(store, _settings(), providers=broken)
    with pytest.raises(RuntimeError):
        await chat.start("t", "agt_1", ChatInput("hi"))
    assert [r.status for r in store.runs.records.values()] == ["error"]


async def test_a_conversation_of_the_callers_is_not_stored_unless_a_session_is_named() -> None:
    history = [Message("user", "earlier"), Message("assistant", "before")]
    for session, stored in ((None, False), ("s1", True)):
        store = _store()
        store.conversations.messages[("t", "agt_1", "u", "default")] = [
            HistoryMessage("user", "old", "r", "")
        ]
        provider = _Recording()
        chat = ChatService(store, _settings(), providers=provider.factory)
        run = await chat.start(
            "t", "agt_1", ChatInput("now", user_id="u", session_id=session, history=history)
        )
        events = await _read(run)
        await run.wait()
        # the caller's conversation, not the session's stored history
        assert [m.content for m in provider.requests[0].messages[1:]] == ["earlier", "before", "now"]
        done = events[-1][1]
        assert isinstance(done, Done)
        assert done.memories_updated is stored
        kept = store.conversations.messages.get(("t", "agt_1", "u", "s1"), [])
        assert [(m.role, m.content) for m in kept] == (
            [("user", "now"), ("assistant", REPLY)] if stored else []
        )


async def test_a_turn_of_tool_results_is_stored_with_the_users_words_once_it_answers() -> None:
    store = _store()
    chat = ChatService(store, _settings())
    history = [
        Message("user", "what is 6*7?"),
        Message("assistant", "", tool_calls=(ToolCallRequest("c1", "calc", {"expression": "6*7"}),)),
        Message("tool", "42", tool_call_id="c1", name="calc"),
    ]
    run = await chat.start("t", "agt_1", ChatInput(None, user_id="u", session_id="s", history=history))
    await _read(run)
    await run.wait()
    kept = store.conversations.messages[("t", "agt_1", "u", "s")]
    assert [(m.role, m.content) for m in kept] == [
        ("user", "what is 6*7?"),
        ("assistant", "The result is 42."),
    ]


async def test_client_tools_are_checked_before_the_run_starts() -> None:
    store = _store(tools=["calculator"])
    chat = ChatService(store, _settings())
    taken = ToolSpec("calculator", "", {"type": "object"})
    other = ToolSpec("get_weather", "", {"type": "object"})
    for request, message in [
        (ChatInput("hi", client_tools=[taken]), "taken by the agent's own tools"),
        (ChatInput("hi", client_tools=[other, other]), "must not repeat"),
        (ChatInput(None, history=[Message("user", "hi")]), "needs a user message, or tool results"),
    ]:
        with pytest.raises(BadRequest, match=message):
            await chat.start("t", "agt_1", request)
    assert store.runs.records == {}


async def test_a_resumable_run_is_found_by_its_session_in_the_same_round_trip() -> None:
    store = _store()
    store.runs.latency = 0.2
    chat = ChatService(store, _settings(log_flush_seconds=5, heartbeat_seconds=5))
    started = time.monotonic()
    run = await chat.start("t", "agt_1", ChatInput("hi", session_id="chat1", resumable=True))
    assert time.monotonic() - started < 0.35  # written beside the run record
    assert store.active_runs.pointers == {("t", "agt_1", "chat1"): run.run_id}
    await _read(run)
    await run.wait()
    plain = await chat.start("t", "agt_1", ChatInput("hi", session_id="chat2"))
    await _read(plain)
    await plain.wait()
    assert ("t", "agt_1", "chat2") not in store.active_runs.pointers


class _Recording:
    """The scripted provider, recording the requests it was given."""

    def __init__(self) -> None:
        self.requests: list[ModelRequest] = []

    async def factory(self, model: ModelChoice, settings: Settings) -> ModelProvider:
        inner = ScriptedProvider()
        requests = self.requests

        class Recorder:
            def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
                requests.append(request)
                return inner.stream(request)

        return Recorder()
