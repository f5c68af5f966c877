"""The UI message stream encoder on every way a run ends, read by the AI SDK's own transport (node)."""

from __future__ import annotations

import json

import pytest

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
    event_json,
)
from agentstream.web.ui_stream import UIMessageStream
from tests.support.ui_client import SDKS, run_ui_client


def _run(*middle: Event, status: DoneStatus = "completed") -> list[Event]:
    return [Start("run_1", "agt_1", "chat"), *middle, Done(status, "", 1)]


def live(events: list[Event]) -> str:
    encoder = UIMessageStream()
    # one item at a time and all at once must give the same stream
    one_by_one = b"".join(encoder([(i, e, event_json(e))]) for i, e in enumerate(events))
    assert UIMessageStream()([(i, e, event_json(e)) for i, e in enumerate(events)]) == one_by_one
    return one_by_one.decode()


def replayed(events: list[Event]) -> str:
    encoder = UIMessageStream()
    return b"".join(encoder.event(i, json.loads(event_json(e))) for i, e in enumerate(events)).decode()


RUNS = {
    "completed": _run(
        TextDelta("Let me "),
        TextDelta("compute. "),
        ToolCall("c1", "calculator", {"expression": "1/0"}),
        ToolResult("c1", "calculator", "error: division by zero", is_error=True),
        Metadata({"progress": {"step": 2, "max_steps": 8}}),
        TextDelta("你好 🙂"),
    ),
    "error": _run(TextDelta("part"), Error("upstream broke", "upstream_error"), status="error"),
    "timeout": _run(TextDelta("slow"), status="timeout"),
    "cancelled": _run(TextDelta("stopped"), status="cancelled"),
}


@pytest.mark.parametrize("sdk", SDKS)
def test_every_ending_is_one_valid_message_with_one_terminal_part(sdk: str) -> None:
    bodies = [live(events) for events in RUNS.values()]
    assert [replayed(events) for events in RUNS.values()] == bodies  # a replay is the same stream
    # a replay cut off mid-answer (the invocation ends): an error part, the answer goes on elsewhere
    cut = UIMessageStream()
    paused = b"".join(cut.event(i, json.loads(event_json(e))) for i, e in enumerate(RUNS["timeout"][:2]))
    bodies.append((paused + cut.pause("the invocation ends", 1)).decode())
    results = run_ui_client(sdk=sdk, mode="bodies", api="http://unused", key="k", bodies=bodies)
    completed, error, timeout, cancelled, pause = results
    assert all(body.endswith("data: [DONE]\n\n") for body in bodies)

    parts = completed["message"]["parts"]
    assert [p["type"] for p in parts] == ["step-start", "text", "tool-calculator", "step-start", "text"]
    assert (parts[1]["text"], parts[4]["text"]) == ("Let me compute. ", "你好 🙂")
    assert (parts[2]["state"], parts[2]["errorText"]) == ("output-error", "error: division by zero")
    assert completed["types"][-1] == "finish"
    assert completed["errors"] == []
    assert completed["message"]["metadata"] == {
        "run_id": "run_1",
        "session_id": "chat",
        "status": "completed",
        "usage": {"input_tokens": 0, "output_tokens": 0},
        "metrics": {},
    }
    assert (error["errors"], error["types"][-1]) == (["upstream broke"], "error")
    assert timeout["errors"] == ["the run reached its time limit before the answer was complete"]
    assert (cancelled["errors"], cancelled["types"][-1]) == ([], "abort")
    assert pause["errors"] == ["the invocation ends; resume the chat to continue"]
    assert [p.get("text") for p in pause["message"]["parts"]] == [None, "slow"]
    terminal = {"finish", "error", "abort"}
    assert all(sum(t in terminal for t in r["types"]) == 1 for r in results)
