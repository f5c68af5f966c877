"""No leaks: a full scenario with distinctive secrets configured, then everything it produced is scanned.

Secrets: the admin key, a tenant key, provider and endpoint keys, user names and passwords in upstream
URLs, the upstream's internal address (host and port) and an internal host name. The scenario: chat
stream, JSON chat, the OpenAI-compatible route (streamed and not), the AI SDK route, an upstream that
fails and quotes its own URL and key in its error body, an endpoint whose host does not resolve, run
records, replays and the OpenAPI schema. Scanned: every response body and stream, every log record at
DEBUG (tracebacks included), and every item of the table (run-log batches decompressed).
"""

from __future__ import annotations

import contextlib
import json
import logging
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.fakes.openai_upstream import FakeOpenAI, Reply
from tests.support.leaks import Secrets
from tests.support.server import parse_sse

pytestmark = pytest.mark.anyio

ADMIN = "adm-7Q1x-leakscan-admin-secret"
OPENAI_KEY = "sk-leakscan-openai-5b8e1f"
URL_USER = "leakuser-9c1e"
URL_PASSWORD = "Pw-leakscan-4d2b"
ENDPOINT_KEY = "ep-leakscan-key-77aa"
ENDPOINT_USER = "svcacct-0f3c"
ENDPOINT_PASSWORD = "EpPass-leakscan-e91d"
INTERNAL_HOST = "internal-llm-7f3a.corp.invalid"
MCP_TOKEN = "mcp-leakscan-token-31f0"
MCP_DOWN_HOST = "mcp-internal-9e2d.corp.invalid"
# loggers of the test's own servers in this process (the MCP server's SDK and its uvicorn): not ours
FOREIGN_LOGGERS = ("mcp", "uvicorn", "sse_starlette", "tests")


@pytest.fixture
def secrets() -> Secrets:
    return Secrets()


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def mcp_server() -> Iterator[Any]:
    from tests.fakes.mcp_server import McpTestServer

    with McpTestServer(token=MCP_TOKEN) as server:
        yield server


@pytest.fixture
async def client(
    upstream: FakeOpenAI,
    mcp_server: Any,
    dynamodb: Any,
    monkeypatch: pytest.MonkeyPatch,
    secrets: Secrets,
    caplog: pytest.LogCaptureFixture,
) -> AsyncIterator[httpx.AsyncClient]:
    from agentstream.config import Settings
    from agentstream.store import Store
    from agentstream.web.app import create_app

    address = f"127.0.0.1:{upstream.port}"
    endpoint_url = f"http://{ENDPOINT_USER}:{ENDPOINT_PASSWORD}@{INTERNAL_HOST}:8443/v1"
    monkeypatch.setenv("AGENTSTREAM_ADMIN_KEY", ADMIN)
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://{URL_USER}:{URL_PASSWORD}@{address}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("LEAKSCAN_ENDPOINT_KEY", ENDPOINT_KEY)
    endpoints = {
        "internal": {"provider": "openai", "base_url": endpoint_url, "api_key_env": "LEAKSCAN_ENDPOINT_KEY"}
    }
    monkeypatch.setenv("AGENTSTREAM_ENDPOINTS", json.dumps(endpoints))
    monkeypatch.setenv("AGENTSTREAM_UPSTREAM_RETRIES", "1")  # a failure is logged, then tried again
    monkeypatch.setenv("AGENTSTREAM_UPSTREAM_CONNECT_TIMEOUT", "2")
    secrets.add(ADMIN, OPENAI_KEY, URL_USER, URL_PASSWORD, address, str(upstream.port))
    secrets.add(ENDPOINT_KEY, ENDPOINT_USER, ENDPOINT_PASSWORD, INTERNAL_HOST, endpoint_url)
    mcp = {
        "private": {"url": mcp_server.url, "headers_env": "LEAKSCAN_MCP_HEADERS"},
        "down": {"url": f"http://{MCP_DOWN_HOST}:9000/mcp"},
    }
    monkeypatch.setenv("AGENTSTREAM_MCP_SERVERS", json.dumps(mcp))
    monkeypatch.setenv("LEAKSCAN_MCP_HEADERS", json.dumps({"Authorization": f"Bearer {MCP_TOKEN}"}))
    secrets.add(MCP_TOKEN, MCP_DOWN_HOST, f"127.0.0.1:{mcp_server.port}")
    from agentstream.core.mcp import clear_cache

    clear_cache()
    caplog.set_level(logging.DEBUG)
    app = create_app(Settings(), Store("agentstream", dynamodb))
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://test", headers=headers
    ) as c:
        yield c
    clear_cache()


async def _call(
    c: httpx.AsyncClient, secrets: Secrets, method: str, path: str, **kwargs: Any
) -> httpx.Response:
    r = await c.request(method, path, **kwargs)
    secrets.saw(f"{method} {path} -> {r.status_code}", r.content)
    secrets.saw(f"{method} {path} headers", json.dumps(dict(r.headers)))
    return r


def _events(r: httpx.Response) -> list[dict[str, Any]]:
    return [data for _, data in parse_sse(r.content)]


async def test_a_full_run_leaks_no_secret(
    client: httpx.AsyncClient,
    upstream: FakeOpenAI,
    mcp_server: Any,
    dynamodb: Any,
    secrets: Secrets,
    caplog: pytest.LogCaptureFixture,
) -> None:
    c = client
    # a tenant key: its one answer is the key; everything else is scanned for it
    r = await c.post("/api/v1/keys", json={"tenant": "acme", "name": "leak scan"})
    assert r.status_code == 201, r.text
    tenant_key = r.json()["data"]["key"]
    secrets.add(tenant_key)
    tenant = {"Authorization": f"Bearer {tenant_key}"}

    agent_body = {"name": "glm", "model": {"provider": "openai", "name": "glm-4-flash"}}
    r = await _call(c, secrets, "POST", "/api/v1/agents", json=agent_body, headers=tenant)
    assert r.status_code == 201, r.text
    agent = r.json()["data"]["id"]
    r = await _call(
        c,
        secrets,
        "POST",
        "/api/v1/agents",
        json={"name": "in", "model": {"endpoint": "internal", "name": "m"}},
        headers=tenant,
    )
    assert r.status_code == 201, r.text
    unreachable = r.json()["data"]["id"]

    chat = {"message": "你好", "user_id": "u1"}
    upstream.enqueue(Reply.chat("streamed ", "fine"), Reply.chat("json fine"))
    r = await _call(c, secrets, "POST", f"/api/v1/agents/{agent}/chat/stream", json=chat, headers=tenant)
    assert _events(r)[-1]["status"] == "completed"
    r = await _call(c, secrets, "POST", f"/api/v1/agents/{agent}/chat", json=chat, headers=tenant)
    assert r.status_code == 200, r.text
    upstream.enqueue(Reply.chat("compat ", "stream"), Reply.chat("compat json"), Reply.chat("ui ", "text"))
    compat = {"model": agent, "messages": [{"role": "user", "content": "hi"}]}
    r = await _call(
        c, secrets, "POST", "/v1/chat/completions", json={**compat, "stream": True}, headers=tenant
    )
    assert b"[DONE]" in r.content
    r = await _call(c, secrets, "POST", "/v1/chat/completions", json=compat, headers=tenant)
    assert r.status_code == 200, r.text
    ui = {
        "id": "chat1",
        "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}],
    }
    r = await _call(c, secrets, "POST", f"/api/v1/agents/{agent}/chat/ui", json=ui, headers=tenant)
    assert r.status_code == 200, r.text

    # tools of an MCP server that takes a secret header, beside one whose internal host is down
    r = await _call(
        c,
        secrets,
        "POST",
        "/api/v1/agents",
        json={**agent_body, "name": "mcp", "tools": ["mcp:private", "mcp:down"]},
        headers=tenant,
    )
    assert r.status_code == 201, r.text
    with_mcp = r.json()["data"]["id"]
    call = (
        Reply()
        .tool_call(0, id="call_0", name="mcp__private__whoami", arguments="{}")
        .finish("tool_calls")
        .done()
    )
    upstream.enqueue(call, Reply.chat("authorized"))
    r = await _call(c, secrets, "POST", f"/api/v1/agents/{with_mcp}/chat/stream", json=chat, headers=tenant)
    events = _events(r)
    assert [e["content"] for e in events if e["chunk_type"] == "tool_result"] == ["authorized ✅"]
    assert "down" in next(e["data"]["mcp_unavailable"] for e in events if e["chunk_type"] == "metadata")
    assert mcp_server.calls == [("whoami", {})]

    # an upstream that fails and quotes its own address, credentials and the key in its error body
    echo = (
        f"proxy error calling http://{URL_USER}:{URL_PASSWORD}@127.0.0.1:{upstream.port}/v1/chat/completions "
        f"(host 127.0.0.1:{upstream.port}, Authorization: Bearer {OPENAI_KEY})"
    )
    upstream.enqueue(*(Reply.error(500, echo, type="server_error") for _ in range(6)))
    r = await _call(c, secrets, "POST", f"/api/v1/agents/{agent}/chat/stream", json=chat, headers=tenant)
    error = next(e for e in _events(r) if e["chunk_type"] == "error")
    assert (error["code"], _events(r)[-1]["status"]) == ("upstream_error", "error")
    assert error["content"].startswith("the model API (openai) answered HTTP 500: proxy error calling")
    r = await _call(c, secrets, "POST", f"/api/v1/agents/{agent}/chat", json=chat, headers=tenant)
    assert (r.status_code, r.json()["error"]["code"]) == (502, "upstream_error")
    r = await _call(c, secrets, "POST", "/v1/chat/completions", json=compat, headers=tenant)
    assert r.status_code == 502, r.text

    # an endpoint whose internal host does not resolve: errors name the endpoint, not its address
    r = await _call(
        c, secrets, "POST", f"/api/v1/agents/{unreachable}/chat/stream", json=chat, headers=tenant
    )
    error = next(e for e in _events(r) if e["chunk_type"] == "error")
    # (a resolver that does not answer makes it a connect timeout: named the same way)
    assert error["content"] in (
        "could not connect to the model API (endpoint 'internal')",
        "timed out connecting to the model API (endpoint 'internal')",
    )
    r = await _call(c, secrets, "POST", f"/api/v1/agents/{unreachable}/chat", json=chat, headers=tenant)
    assert r.status_code == 502, r.text
    r = await _call(
        c, secrets, "POST", "/v1/chat/completions", json={**compat, "model": unreachable}, headers=tenant
    )
    assert r.status_code == 502, r.text

    # what the stored runs say, replayed
    for run_id in {e for e in _run_ids(dynamodb)}:
        await _call(c, secrets, "GET", f"/api/v1/runs/{run_id}", headers=tenant)
        r = await _call(c, secrets, "GET", f"/api/v1/runs/{run_id}/events", headers=tenant)
        assert _events(r)[-1]["chunk_type"] == "done"
    await _call(c, secrets, "GET", "/openapi.json")
    await _call(c, secrets, "GET", "/api/v1/agents", headers=tenant)

    for item in _items(dynamodb):
        secrets.saw(f"item {item['pk']['S']} {item['sk']['S']}", _item_text(item))
    records = caplog.records
    assert "agentstream.core.providers._retry" in {r.name for r in records}  # the failures were logged
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    for record in records:
        if not record.name.startswith(FOREIGN_LOGGERS):
            secrets.saw(f"log {record.name}", formatter.format(record))
    assert len(secrets.produced) > 50
    assert secrets.leaks() == []


def _items(dynamodb: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in dynamodb.get_paginator("scan").paginate(TableName="agentstream"):
        items += page["Items"]
    return items


def _run_ids(dynamodb: Any) -> list[str]:
    return [i["pk"]["S"].split("#R#")[1] for i in _items(dynamodb) if i["sk"]["S"] == "RUN"]


def _item_text(item: dict[str, Any]) -> str:
    """The item as text, its binary attributes (run-log batches) decompressed."""
    parts: list[str] = []
    for name, value in item.items():
        if "B" in value:
            raw = bytes(value["B"])
            with contextlib.suppress(zlib.error):  # an uncompressed batch
                raw = zlib.decompress(raw)
            parts.append(f"{name}={raw.decode('utf-8', 'replace')}")
        else:
            parts.append(f"{name}={json.dumps(value, ensure_ascii=False)}")
    return " ".join(parts)
