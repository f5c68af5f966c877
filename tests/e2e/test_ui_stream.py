"""The AI SDK UI message stream with the AI SDK itself (npm `ai` 5.0.216, strict, and 7.x) against uvicorn.

`DefaultChatTransport` sends the requests and validates every part with the SDK's own schemas;
`readUIMessageStream` (or `AbstractChat`, the engine of `useChat`) assembles the UIMessage the tests
look at. Nothing here parses the stream by hand.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY
from tests.support.ui_client import NODE_DIR, SDKS, node, run_ui_client

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
REPLY = "Streaming is real: 流式输出不丢字 🙂, e\u0301 and 👨‍👩‍👧 stay whole, and it ends exactly."


def create_agent(base: str, tools: list[str] | None = None, **options: Any) -> str:
    model = {"provider": "scripted", "name": "s", "options": {"delay_ms": 0, **options}}
    r = httpx.post(
        f"{base}/api/v1/agents", json={"name": "ui", "model": model, "tools": tools or []}, headers=AUTH
    )
    assert r.status_code == 201, r.text
    agent_id: str = r.json()["data"]["id"]
    return agent_id


def ui(base: str, agent: str, sdk: str, mode: str, chat: str, **args: Any) -> Any:
    api = f"{base}/api/v1/agents/{agent}/chat/ui"
    return run_ui_client(sdk=sdk, mode=mode, api=api, key=ADMIN_KEY, chatId=chat, **args)


def texts(message: dict[str, Any]) -> list[str]:
    return [p["text"] for p in message["parts"] if p["type"] == "text"]


def squeeze(types: list[str]) -> list[str]:
    """Chunk types with each run of text-deltas as one."""
    return [t for i, t in enumerate(types) if t != "text-delta" or types[i - 1] != "text-delta"]


@pytest.mark.parametrize("sdk", SDKS)
def test_a_reply_with_a_tool_call_is_one_ui_message(live_server: str, sdk: str) -> None:
    agent = create_agent(live_server, tools=["calculator"], delta_chars=2)
    out = ui(live_server, agent, sdk, "send", f"chat-{sdk}", text="what is 2+3*4?", userId="u1")
    assert out["errors"] == []
    assert squeeze(out["types"]) == [
        "start",
        "message-metadata",
        "start-step",
        "tool-input-start",
        "tool-input-available",
        "tool-output-available",
        "finish-step",
        "start-step",
        "text-start",
        "text-delta",
        "text-end",
        "finish-step",
        "message-metadata",
        "finish",
    ]
    message = out["message"]
    assert message["role"] == "assistant"
    assert message["id"].startswith("run_")
    step, tool, step_two, text = message["parts"]
    assert step == step_two == {"type": "step-start"}
    assert tool["type"] == "tool-calculator"
    assert (tool["state"], tool["input"], tool["output"]) == (
        "output-available",
        {"expression": "2+3*4"},
        "14",
    )
    assert text == {"type": "text", "text": "The result is 14.", "state": "done"}
    metadata = message["metadata"]
    assert (metadata["run_id"], metadata["session_id"], metadata["status"]) == (
        message["id"],
        f"chat-{sdk}",
        "completed",
    )
    assert metadata["usage"]["output_tokens"] == 4
    assert metadata["metrics"]["content_events"] == 9
    # the chat id is the session id: the turn is kept for the next one
    r = httpx.get(
        f"{live_server}/api/v1/agents/{agent}/sessions/chat-{sdk}/messages",
        params={"user_id": "u1"},
        headers=AUTH,
    )
    assert [m["content"] for m in r.json()["data"]] == ["what is 2+3*4?", "The result is 14."]


def test_text_is_exact_and_streams_with_the_protocol_header(live_server: str) -> None:
    agent = create_agent(live_server, reply=REPLY, delta_chars=3, delay_ms=40)
    out = ui(live_server, agent, "ai5", "send", "exact", text="go")
    assert out["errors"] == []
    assert texts(out["message"]) == [REPLY]
    deltas = out["types"].count("text-delta")
    assert deltas == len(range(0, len(REPLY), 3))
    # 40 ms apart at the model: the first text arrives long before the end
    assert out["endedAt"] - out["firstTextAt"] > 0.03 * 1000 * (deltas - 1)
    body = {"id": "hdr", "messages": [{"id": "m", "role": "user", "parts": [{"type": "text", "text": "x"}]}]}
    with httpx.stream("POST", f"{live_server}/api/v1/agents/{agent}/chat/ui", json=body, headers=AUTH) as r:
        assert r.status_code == 200
        assert r.headers["x-vercel-ai-ui-message-stream"] == "v1"
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-run-id"].startswith("run_")


@pytest.mark.parametrize("sdk", SDKS)
def test_a_failed_run_ends_with_one_error_part(live_server: str, sdk: str) -> None:
    agent = create_agent(live_server, reply="abcdefghij", delta_chars=2, fail_after=3)
    out = ui(live_server, agent, sdk, "send", "failing")
    assert out["errors"] == ["scripted provider failure (fail_after)"]
    assert texts(out["message"]) == ["abcdef"]  # what came before the failure stays
    assert out["types"][-3:] == ["finish-step", "message-metadata", "error"]
    assert "finish" not in out["types"]
    assert out["message"]["metadata"]["status"] == "error"


@pytest.mark.parametrize("sdk", SDKS)
def test_a_reload_mid_answer_continues_the_answer(live_server: str, sdk: str) -> None:
    agent = create_agent(live_server, reply=REPLY, delta_chars=3, delay_ms=25)
    out = ui(live_server, agent, sdk, "reload", f"reload-{sdk}", text="go", stopAfterChars=10)
    first, resumed = out["first"], out["resumed"]
    assert first["left"]
    before = "".join(texts(first["message"]))
    assert 10 <= len(before) < len(REPLY)
    assert REPLY.startswith(before)
    # the resume request replays the running answer from its start and follows it to its end
    assert resumed["errors"] == []
    assert resumed["message"]["id"] == first["message"]["id"]
    assert texts(resumed["message"]) == [REPLY]
    assert resumed["types"][0] == "start"
    assert resumed["types"][-1] == "finish"
    assert resumed["message"]["metadata"]["status"] == "completed"
    # once it has ended there is nothing to resume
    assert ui(live_server, agent, sdk, "resume", f"reload-{sdk}") == {"status": 204}


def test_use_chat_resume_after_a_reload(live_server: str) -> None:
    agent = create_agent(live_server, reply=REPLY, delta_chars=3, delay_ms=25)
    out = ui(live_server, agent, "ai7", "chat", "page", text="go", stopAfterChars=10)
    assert out["errors"] == []
    assert len(out["before"]) >= 10
    user, answer = out["messages"]
    assert texts(user) == ["go"]
    assert texts(answer) == [REPLY]
    assert out["status"] == "ready"
    assert ui(live_server, agent, "ai7", "resume", "never-used") == {"status": 204}


@pytest.mark.parametrize("sdk", SDKS)
def test_a_cancelled_run_ends_with_abort(live_server: str, sdk: str) -> None:
    agent = create_agent(live_server, reply=REPLY, delta_chars=1, delay_ms=40)
    api = f"{live_server}/api/v1/agents/{agent}/chat/ui"
    args = json.dumps({"sdk": sdk, "mode": "send", "api": api, "key": ADMIN_KEY, "chatId": f"stop-{sdk}"})
    with subprocess.Popen(
        [node(), str(NODE_DIR / "ui_client.mjs"), args], stdout=subprocess.PIPE, text=True
    ) as page:
        run_id = None
        deadline = time.monotonic() + 10
        while run_id is None and time.monotonic() < deadline:  # the page's Stop knows the run id
            with httpx.stream("GET", f"{api}/stop-{sdk}/stream", headers=AUTH) as r:
                run_id = r.headers.get("x-run-id")
        assert run_id is not None
        assert httpx.post(f"{live_server}/api/v1/runs/{run_id}/cancel", headers=AUTH).status_code == 202
        stdout, _ = page.communicate(timeout=20)
    out = json.loads(stdout)
    assert out["errors"] == []
    assert out["types"][-2:] == ["message-metadata", "abort"]
    assert out["message"]["metadata"]["status"] == "cancelled"
    assert REPLY.startswith("".join(texts(out["message"])))


def test_the_sdk_checks_parts_strictly(live_server: str) -> None:
    """A control for every test above: ai 5 refuses a key outside the protocol (ai 7 lets it pass)."""
    bad = 'data: {"type":"start","messageId":"m1","runId":"not a protocol key"}\n\ndata: [DONE]\n\n'
    strict = run_ui_client(sdk="ai5", mode="bodies", api="http://unused", key="k", bodies=[bad])
    loose = run_ui_client(sdk="ai7", mode="bodies", api="http://unused", key="k", bodies=[bad])
    assert "Unrecognized key" in strict[0]["errors"][0]
    assert loose[0]["errors"] == []
