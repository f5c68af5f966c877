"""The whole local path with a real upstream over HTTP: client <- uvicorn <- app <- fake OpenAI server.

The fake upstream controls exactly how its bytes are split into network writes and when they leave,
so these tests catch buffering and broken characters anywhere between the model and the client.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY
from tests.fakes.openai_upstream import FakeOpenAI, Reply
from tests.support.server import read_sse, serve_in_thread

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
TEXT = ["你好", "，世界！", "👨‍👩‍👧‍👦 family, ", "🇨🇳 flag, ", "e\u0301 combining, ", "नमस्ते", " done."]


@pytest.fixture
def server(fake_openai: FakeOpenAI, dynamodb: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from agentstream.config import Settings
    from agentstream.store import Store
    from agentstream.web.app import create_app

    monkeypatch.setenv("AGENTSTREAM_ADMIN_KEY", ADMIN_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    monkeypatch.setenv("AGENTSTREAM_UPSTREAM_READ_TIMEOUT", "1")
    monkeypatch.setenv("AGENTSTREAM_UPSTREAM_RETRIES", "0")  # one scripted reply per model call
    with serve_in_thread(create_app(Settings(), Store("agentstream", dynamodb))) as url:
        yield url


def _agent(base: str, tools: list[str] | None = None) -> str:
    body = {"name": "glm", "model": {"provider": "openai", "name": "glm-4-flash"}, "tools": tools or []}
    r = httpx.post(f"{base}/api/v1/agents", json=body, headers=AUTH)
    assert r.status_code == 201, r.text
    agent_id: str = r.json()["data"]["id"]
    return agent_id


def _chat(base: str, agent: str, **options: Any) -> Any:
    body = {"message": "你好", "user_id": "test", **({"stream_options": options} if options else {})}
    return read_sse(f"{base}/api/v1/agents/{agent}/chat/stream", body, key=ADMIN_KEY)


def test_tokens_leave_as_the_upstream_produces_them(server: str, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply.chat(*[f"token{i} " for i in range(8)], usage=(12, 8), pause=0.15))
    agent = _agent(server)
    start = time.monotonic()
    stream = _chat(server, agent)
    contents = [e for e in stream.events if e.data["chunk_type"] == "content"]
    assert len(contents) == 8
    # the upstream needs ~1.2 s for the whole answer: a generate-then-split server sends nothing before it
    assert contents[0].at - start < 0.5
    assert contents[-1].at - contents[0].at > 0.7
    done = stream.events[-1].data
    assert done["usage"] == {"input_tokens": 12, "output_tokens": 8}
    assert done["metrics"]["ttft_ms"] < 500
    sent = fake_openai.requests[0]
    assert sent.headers["authorization"] == "Bearer sk-test-secret"
    assert sent.json["stream"] is True
    assert sent.json["model"] == "glm-4-flash"
    assert [m["role"] for m in sent.json["messages"]] == ["system", "user"]


@pytest.mark.parametrize("chunk_size", [0, 1, 3, 10])
def test_characters_split_across_network_writes_come_out_exact(
    server: str, fake_openai: FakeOpenAI, chunk_size: int
) -> None:
    reply = Reply.chat(*TEXT)
    body_length = len(reply.body())
    # cut the upstream body every 3 bytes: nearly every multi-byte character is split across writes
    fake_openai.enqueue(Reply.chat(*TEXT).split_at(*range(3, body_length, 3)))
    stream = _chat(server, _agent(server), chunk_size=chunk_size)
    pieces = [e["content"] for e in stream.of("content")]
    expected = "".join(TEXT)
    assert "".join(pieces) == expected == stream.events[-1].data["final_response"]
    assert "\ufffd" not in stream.raw.decode("utf-8")
    if chunk_size:
        assert all(0 < len(p) <= chunk_size for p in pieces)
    else:
        assert pieces == TEXT


def test_tool_round_trip_through_the_upstream(server: str, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(
        Reply()
        .tool_call(0, id="call_1", name="calculator", arguments='{"expre')
        .tool_call(0, arguments='ssion": "2+3*4"}')
        .finish("tool_calls")
        .done(),
        Reply.chat("2+3*4 = ", "14"),
    )
    stream = _chat(server, _agent(server, ["calculator"]))
    kinds = [e.data["chunk_type"] for e in stream.events]
    assert kinds == ["start", "tool_call", "tool_result", "metadata", "content", "content", "done"]
    assert stream.of("metadata")[0]["data"] == {"progress": {"step": 2, "max_steps": 8}}
    assert stream.of("tool_call")[0]["arguments"] == {"expression": "2+3*4"}
    assert stream.of("tool_result")[0]["content"] == "14"
    assert stream.events[-1].data["total_steps"] == 2
    second = fake_openai.requests[1].json["messages"]
    assert second[-1] == {"role": "tool", "tool_call_id": "call_1", "content": "14"}
    assert fake_openai.requests[0].json["tools"][0]["function"]["name"] == "calculator"


@pytest.mark.parametrize(
    ("reply", "code", "fragment"),
    [
        (Reply.error(500, "model overloaded"), "upstream_error", "HTTP 500"),
        (Reply.error(401, "bad key sk-test-secret"), "upstream_auth", "HTTP 401"),
        (Reply().text("partial ").drop(), "upstream_error", ""),
        (Reply().text("partial ").raw("data: {not json\n\n"), "upstream_error", ""),
        (Reply().text("partial ").stall(), "upstream_timeout", ""),
    ],
    ids=["http-500", "http-401", "dropped", "malformed", "stalled"],
)
def test_upstream_failures_end_with_error_then_done(
    server: str, fake_openai: FakeOpenAI, reply: Reply, code: str, fragment: str
) -> None:
    fake_openai.enqueue(reply)
    stream = _chat(server, _agent(server))
    kinds = [e.data["chunk_type"] for e in stream.events]
    assert kinds[-2:] == ["error", "done"]
    assert kinds.count("done") == 1
    error, done = stream.events[-2].data, stream.events[-1].data
    assert error["code"] == code
    assert fragment in error["content"]
    assert "sk-test-secret" not in stream.raw.decode()
    assert done["status"] == "error"
    assert done["final_response"] == stream.content


def test_client_disconnect_closes_the_upstream_request_within_a_second(
    server: str, fake_openai: FakeOpenAI
) -> None:
    fake_openai.enqueue(Reply().text("first ").stall())
    agent = _agent(server)
    stream = read_sse(
        f"{server}/api/v1/agents/{agent}/chat/stream", {"message": "hi"}, key=ADMIN_KEY, stop_after=2
    )
    gone = time.monotonic()
    assert [e.data["chunk_type"] for e in stream.events] == ["start", "content"]
    assert fake_openai.requests[0].client_closed.wait(2.0)
    closed_at = fake_openai.requests[0].client_closed_at
    assert closed_at is not None
    assert closed_at - gone < 1.0
    run = httpx.get(f"{server}/api/v1/runs/{stream.headers['x-run-id']}", headers=AUTH)
    deadline = time.monotonic() + 3
    while run.json()["data"]["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
        run = httpx.get(f"{server}/api/v1/runs/{stream.headers['x-run-id']}", headers=AUTH)
    assert run.json()["data"]["status"] == "cancelled"


@pytest.fixture
def quick_send_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTSTREAM_SEND_TIMEOUT_SECONDS", "1")


@pytest.mark.usefixtures("quick_send_timeout")
def test_a_client_that_stops_reading_is_dropped_and_its_run_stopped(
    server: str, fake_openai: FakeOpenAI
) -> None:
    """Without a send timeout the run would wait on the socket forever (it stays running)."""
    # 8 MB: more than the kernel's socket buffers on loopback (4 MB) can hide
    fake_openai.enqueue(Reply.chat(*["x" * 1000] * 8000))
    agent = _agent(server)
    host, port = server.removeprefix("http://").split(":")
    body = json.dumps({"message": "go"}).encode()
    request = (
        f"POST /api/v1/agents/{agent}/chat/stream HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {ADMIN_KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((host, int(port)))
        sock.sendall(request)
        head = sock.recv(4096)  # the response starts; then this client reads nothing more
        run_id = re.search(rb"x-run-id: (\S+)", head, re.IGNORECASE)
        assert run_id is not None
        deadline = time.monotonic() + 10
        status = "running"
        while status == "running" and time.monotonic() < deadline:
            time.sleep(0.2)
            r = httpx.get(f"{server}/api/v1/runs/{run_id.group(1).decode()}", headers=AUTH)
            status = r.json()["data"]["status"]
        assert status == "cancelled"
