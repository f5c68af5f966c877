"""MCP tools end to end: client <- uvicorn <- app -> fake OpenAI upstream, and -> real MCP servers
(the official SDK's streamable HTTP server) that the agent's tools call."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from agentstream.devserver.procs import free_port
from tests.conftest import ADMIN_KEY
from tests.fakes.mcp_server import GREETING, McpTestServer, mcp_servers
from tests.fakes.openai_upstream import FakeOpenAI, Reply
from tests.support.server import SSEStream, read_sse, serve_in_thread
from tests.support.ui_client import SDKS, run_ui_client

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="module")
def mcp() -> Iterator[tuple[McpTestServer, McpTestServer]]:
    with mcp_servers() as servers:
        yield servers


def mcp_env(monkeypatch: pytest.MonkeyPatch, open_server: McpTestServer, private: McpTestServer) -> None:
    """Three servers: ``tools`` (open), ``private`` (headers from an env variable), ``down`` (nobody)."""
    servers = {
        "tools": {"url": open_server.url},
        "private": {"url": private.url, "headers_env": "PRIVATE_MCP_HEADERS"},
        "down": {"url": f"http://127.0.0.1:{free_port()}/mcp"},
        # the same server, its headers in a Secrets Manager secret (moto's, beside the table)
        "vault": {"url": private.url, "headers_secret_arn": "mcp-vault-headers"},
    }
    monkeypatch.setenv("AGENTSTREAM_MCP_SERVERS", json.dumps(servers))
    monkeypatch.setenv("PRIVATE_MCP_HEADERS", json.dumps({"Authorization": f"Bearer {private.token}"}))
    monkeypatch.setenv("AGENTSTREAM_MCP_CALL_TIMEOUT_SECONDS", "2")
    monkeypatch.setenv("AGENTSTREAM_MCP_RESULT_MAX_CHARS", "500")


@pytest.fixture
def server(
    fake_openai: FakeOpenAI,
    dynamodb: Any,
    mcp: tuple[McpTestServer, McpTestServer],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[str]:
    from agentstream.config import Settings
    from agentstream.core.mcp import clear_cache
    from agentstream.store import Store
    from agentstream.web.app import create_app

    clear_cache()
    monkeypatch.setenv("AGENTSTREAM_ADMIN_KEY", ADMIN_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    mcp_env(monkeypatch, *mcp)
    with serve_in_thread(create_app(Settings(), Store("agentstream", dynamodb))) as url:
        yield url
    clear_cache()


def _agent(base: str, tools: list[str]) -> str:
    body = {"name": "mcp", "model": {"provider": "openai", "name": "glm-4-flash"}, "tools": tools}
    r = httpx.post(f"{base}/api/v1/agents", json=body, headers=AUTH)
    assert r.status_code == 201, r.text
    agent_id: str = r.json()["data"]["id"]
    return agent_id


def _calls(*calls: tuple[str, dict[str, Any]]) -> Reply:
    reply = Reply()
    for i, (name, arguments) in enumerate(calls):
        reply.tool_call(i, id=f"call_{i}", name=name, arguments=json.dumps(arguments, ensure_ascii=False))
    return reply.finish("tool_calls").done()


def _chat(base: str, agent: str, **kwargs: Any) -> SSEStream:
    return read_sse(f"{base}/api/v1/agents/{agent}/chat/stream", {"message": "go"}, key=ADMIN_KEY, **kwargs)


def _offered(fake: FakeOpenAI, index: int = 0) -> dict[str, dict[str, Any]]:
    return {t["function"]["name"]: t["function"] for t in fake.requests[index].json.get("tools", [])}


def test_an_agent_calls_mcp_tools_like_built_ins(
    server: str, fake_openai: FakeOpenAI, mcp: tuple[McpTestServer, McpTestServer]
) -> None:
    fake_openai.enqueue(
        _calls(
            ("mcp__tools__greet", {"name": "世界"}),
            ("mcp__tools__fail", {"reason": "磁盘满了"}),
            ("mcp__private__whoami", {}),
            ("calculator", {"expression": "6*7"}),
        ),
        Reply.chat("好的 ", "✅"),
    )
    stream = _chat(server, _agent(server, ["calculator", "mcp:tools", "mcp:private"]))
    kinds = [e.data["chunk_type"] for e in stream.events]
    assert kinds == ["start", *["tool_call", "tool_result"] * 4, "metadata", "content", "content", "done"]
    results = {r["tool_name"]: r for r in stream.of("tool_result")}
    assert results["mcp__tools__greet"]["content"] == GREETING.format(name="世界")
    assert "is_error" not in results["mcp__tools__greet"] or not results["mcp__tools__greet"]["is_error"]
    assert results["mcp__tools__fail"]["is_error"] is True
    assert "失败了: 磁盘满了" in results["mcp__tools__fail"]["content"]
    assert results["mcp__private__whoami"]["content"] == "authorized ✅"
    assert results["calculator"]["content"] == "42"
    assert stream.events[-1].data["status"] == "completed"
    assert stream.events[-1].data["final_response"] == "好的 ✅"
    # the model saw the servers' schemas beside the built-in, under names its API accepts
    offered = _offered(fake_openai)
    assert set(offered) == {
        "calculator",
        "mcp__tools__greet",
        "mcp__tools__slow",
        "mcp__tools__fail",
        "mcp__tools__big",
        "mcp__private__whoami",
    }
    assert offered["mcp__tools__greet"]["parameters"]["properties"]["name"]["type"] == "string"
    assert offered["mcp__tools__greet"]["description"] == "Greet someone warmly, in Chinese."
    # the tool results went back to the model
    second = fake_openai.requests[1].json["messages"]
    assert {"role": "tool", "tool_call_id": "call_0", "content": GREETING.format(name="世界")} in second
    # the private server's credentials came from the operator's environment variable
    open_server, private = mcp
    assert all(h.get("authorization") == f"Bearer {private.token}" for h in private.headers)
    assert all("authorization" not in h for h in open_server.headers)
    assert ("greet", {"name": "世界"}) in open_server.calls


def test_tool_lists_are_fetched_once_per_process(
    server: str, fake_openai: FakeOpenAI, mcp: tuple[McpTestServer, McpTestServer]
) -> None:
    open_server = mcp[0]
    agent = _agent(server, ["mcp:tools"])
    before = sum(1 for h in open_server.headers if h.get("mcp-method") == "tools/list")
    for _ in range(3):
        fake_openai.enqueue(Reply.chat("hi"))
        assert _chat(server, agent).events[-1].data["status"] == "completed"
    lists = sum(1 for h in open_server.headers if h.get("mcp-method") == "tools/list")
    assert lists - before == 1


def test_an_allow_list_offers_only_the_named_tool(server: str, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(_calls(("mcp__tools__slow", {"seconds": 0})), Reply.chat("ok"))
    stream = _chat(server, _agent(server, ["mcp:tools/greet"]))
    assert set(_offered(fake_openai)) == {"mcp__tools__greet"}
    # a tool the agent was not given is not run, whatever the model asks
    result = stream.of("tool_result")[0]
    assert result["is_error"] is True
    assert "unknown tool" in result["content"]


def test_an_unknown_server_is_a_422_and_agents_carry_no_urls(server: str) -> None:
    body = {"name": "x", "model": {"provider": "openai", "name": "m"}, "tools": ["mcp:elsewhere"]}
    r = httpx.post(f"{server}/api/v1/agents", json=body, headers=AUTH)
    assert r.status_code == 422
    assert "unknown MCP server" in r.text
    body["tools"] = ["mcp:https://evil.example/mcp"]
    assert httpx.post(f"{server}/api/v1/agents", json=body, headers=AUTH).status_code == 422


def test_a_server_that_is_down_leaves_the_run_going_with_a_note(server: str, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply.chat("still here"))
    stream = _chat(server, _agent(server, ["mcp:down", "mcp:tools/greet"]))
    kinds = [e.data["chunk_type"] for e in stream.events]
    assert kinds == ["start", "metadata", "content", "done"]
    note = stream.of("metadata")[0]["data"]["mcp_unavailable"]
    assert set(note) == {"down"}
    assert "cannot connect" in note["down"]
    assert stream.events[-1].data["status"] == "completed"
    assert set(_offered(fake_openai)) == {"mcp__tools__greet"}


@pytest.mark.parametrize("sdk", SDKS)
def test_the_ai_sdk_sees_the_note_in_the_message_metadata(
    server: str, fake_openai: FakeOpenAI, sdk: str
) -> None:
    fake_openai.enqueue(Reply.chat("still here"))
    agent = _agent(server, ["mcp:down", "mcp:tools/greet"])
    out = run_ui_client(
        sdk=sdk, mode="send", api=f"{server}/api/v1/agents/{agent}/chat/ui", key=ADMIN_KEY, chatId="c1"
    )
    assert out["errors"] == []  # ai 5 validates every part strictly
    assert out["types"][:4] == ["start", "message-metadata", "start-step", "message-metadata"]
    metadata = out["message"]["metadata"]
    assert "cannot connect" in metadata["mcp_unavailable"]["down"]
    assert metadata["status"] == "completed"  # the closing metadata keeps the note
    assert [p["text"] for p in out["message"]["parts"] if p["type"] == "text"] == ["still here"]


def test_a_slow_tool_times_out_and_a_long_result_is_cut(server: str, fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(
        _calls(("mcp__tools__slow", {"seconds": 10}), ("mcp__tools__big", {"size": 2000})),
        Reply.chat("done"),
    )
    started = time.monotonic()
    stream = _chat(server, _agent(server, ["mcp:tools"]))
    assert time.monotonic() - started < 5
    slow, big = stream.of("tool_result")
    assert slow["is_error"] is True
    assert "did not answer within 2 s" in slow["content"]
    assert big["content"].startswith("字" * 500)
    assert "[cut: 1500 more characters]" in big["content"]
    assert stream.events[-1].data["status"] == "completed"


def test_cancel_during_a_slow_call_closes_its_request(
    server: str, fake_openai: FakeOpenAI, mcp: tuple[McpTestServer, McpTestServer]
) -> None:
    open_server = mcp[0]
    open_server.slow_started.clear()
    open_server.slow_cancelled.clear()
    fake_openai.enqueue(_calls(("mcp__tools__slow", {"seconds": 1.8})))
    cancelled_at: list[float] = []

    def cancel_at_the_call(stream: SSEStream) -> None:
        if stream.events[-1].data["chunk_type"] == "tool_call":
            assert open_server.slow_started.wait(2)
            cancelled_at.append(time.monotonic())
            run_id = stream.headers["x-run-id"]
            assert httpx.post(f"{server}/api/v1/runs/{run_id}/cancel", headers=AUTH).status_code == 202

    stream = _chat(server, _agent(server, ["mcp:tools/slow"]), on_event=cancel_at_the_call)
    done = stream.events[-1]
    assert done.data["status"] == "cancelled"
    assert done.at - cancelled_at[0] < 1.0
    # the MCP request was closed: the server's tool saw its cancellation
    assert open_server.slow_cancelled.wait(1.0)
    assert open_server.slow_cancelled_at is not None
    assert open_server.slow_cancelled_at - cancelled_at[0] < 1.0


def test_headers_from_a_secret(
    server: str, fake_openai: FakeOpenAI, dynamodb: Any, mcp: tuple[McpTestServer, McpTestServer]
) -> None:
    import boto3

    token = f"Bearer {mcp[1].token}"
    boto3.client("secretsmanager", region_name="us-east-1").create_secret(
        Name="mcp-vault-headers", SecretString=json.dumps({"Authorization": token})
    )
    fake_openai.enqueue(_calls(("mcp__vault__whoami", {})), Reply.chat("ok"))
    stream = _chat(server, _agent(server, ["mcp:vault"]))
    assert stream.of("tool_result")[0]["content"] == "authorized ✅"
    assert token not in stream.raw.decode()
