"""MCP tools through the emulated Lambda path (streaming runtime + handler in a subprocess): the
agent calls a real MCP server (the official SDK's) through the fake OpenAI upstream; a cancel and the
invocation's deadline abort a pending call and close its request."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY
from tests.fakes.mcp_server import GREETING, McpTestServer, mcp_servers
from tests.fakes.openai_upstream import FakeOpenAI, Reply
from tests.functional.lambda_front import LambdaFunctionUrl
from tests.support.server import SSEStream, consume_sse

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="module")
def mcp() -> Iterator[tuple[McpTestServer, McpTestServer]]:
    with mcp_servers() as servers:
        yield servers


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(scope="module")
def url(
    tmp_path_factory: pytest.TempPathFactory, mcp: tuple[McpTestServer, McpTestServer], upstream: FakeOpenAI
) -> Iterator[str]:
    open_server, private = mcp
    servers = {
        "tools": {"url": open_server.url},
        "private": {"url": private.url, "headers_env": "PRIVATE_MCP_HEADERS"},
    }
    env = {
        "AGENTSTREAM_ADMIN_KEY": ADMIN_KEY,
        "AWS_LAMBDA_MAX_CONCURRENCY": "2",  # a cancel request is served while the run goes on
        "OPENAI_BASE_URL": upstream.base_url,
        "OPENAI_API_KEY": "sk-test",
        "AGENTSTREAM_MCP_SERVERS": json.dumps(servers),
        "PRIVATE_MCP_HEADERS": json.dumps({"Authorization": f"Bearer {private.token}"}),
    }
    with LambdaFunctionUrl(tmp_path_factory.mktemp("lambda"), env) as base:
        yield base


def _agent(base: str, tools: list[str]) -> str:
    body = {"name": "mcp", "model": {"provider": "openai", "name": "glm-4-flash"}, "tools": tools}
    r = httpx.post(f"{base}/api/v1/agents", json=body, headers=AUTH, timeout=20)
    assert r.status_code == 201, r.text
    agent_id: str = r.json()["data"]["id"]
    return agent_id


def _calls(*calls: tuple[str, dict[str, Any]]) -> Reply:
    reply = Reply()
    for i, (name, arguments) in enumerate(calls):
        reply.tool_call(i, id=f"call_{i}", name=name, arguments=json.dumps(arguments, ensure_ascii=False))
    return reply.finish("tool_calls").done()


def _chat(base: str, agent: str, *, deadline_seconds: float | None = None, on_event: Any = None) -> SSEStream:
    headers = dict(AUTH)
    if deadline_seconds is not None:
        headers["x-test-deadline-seconds"] = str(deadline_seconds)
    url = f"{base}/api/v1/agents/{agent}/chat/stream"
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", url, json={"message": "go"}, headers=headers) as r,
    ):
        stream = SSEStream(r.status_code, r.headers)
        consume_sse(r.iter_raw(), stream, on_event=on_event)
    return stream


def test_mcp_tools_stream_through_lambda(
    url: str, upstream: FakeOpenAI, mcp: tuple[McpTestServer, McpTestServer]
) -> None:
    upstream.enqueue(
        _calls(
            ("mcp__tools__greet", {"name": "Lambda"}),
            ("mcp__tools__fail", {"reason": "坏了"}),
            ("mcp__private__whoami", {}),
        ),
        Reply.chat("全部 ", "完成 🎉"),
    )
    stream = _chat(url, _agent(url, ["mcp:tools/greet", "mcp:tools/fail", "mcp:private"]))
    kinds = [e.data["chunk_type"] for e in stream.events]
    assert kinds == ["start", *["tool_call", "tool_result"] * 3, "metadata", "content", "content", "done"]
    greet, fail, whoami = stream.of("tool_result")
    assert greet["content"] == GREETING.format(name="Lambda")
    assert (fail["is_error"], "失败了: 坏了" in fail["content"]) == (True, True)
    assert whoami["content"] == "authorized ✅"
    assert stream.events[-1].data["status"] == "completed"
    assert stream.events[-1].data["final_response"] == "全部 完成 🎉"


def test_cancel_through_lambda_aborts_a_pending_call(
    url: str, upstream: FakeOpenAI, mcp: tuple[McpTestServer, McpTestServer]
) -> None:
    open_server = mcp[0]
    open_server.slow_started.clear()
    open_server.slow_cancelled.clear()
    upstream.enqueue(_calls(("mcp__tools__slow", {"seconds": 20})))
    cancelled_at: list[float] = []

    def cancel_at_the_call(stream: SSEStream) -> None:
        if stream.events[-1].data["chunk_type"] == "tool_call":
            assert open_server.slow_started.wait(5)
            cancelled_at.append(time.monotonic())
            r = httpx.post(f"{url}/api/v1/runs/{stream.headers['x-run-id']}/cancel", headers=AUTH, timeout=10)
            assert r.status_code == 202

    stream = _chat(url, _agent(url, ["mcp:tools/slow"]), on_event=cancel_at_the_call)
    done = stream.events[-1]
    assert done.data["status"] == "cancelled"
    assert done.at - cancelled_at[0] < 1.5
    assert open_server.slow_cancelled.wait(1.5)  # the MCP request was closed


def test_the_invocation_deadline_aborts_a_pending_call(
    url: str, upstream: FakeOpenAI, mcp: tuple[McpTestServer, McpTestServer]
) -> None:
    open_server = mcp[0]
    open_server.slow_cancelled.clear()
    upstream.enqueue(_calls(("mcp__tools__slow", {"seconds": 20})))
    agent = _agent(url, ["mcp:tools/slow"])
    started = time.monotonic()
    # the run ends AGENTSTREAM_DEADLINE_MARGIN_MS (1.5 s) before the invocation's end
    stream = _chat(url, agent, deadline_seconds=3.5)
    assert stream.events[-1].data["status"] == "timeout"
    assert time.monotonic() - started < 3.5
    assert [e.data["chunk_type"] for e in stream.events] == ["start", "tool_call", "done"]
    assert open_server.slow_cancelled.wait(1.0)
