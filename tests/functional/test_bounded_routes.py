"""Every route that starts a run bounds it: the idle limit and AGENTSTREAM_MAX_RUN_SECONDS hold for the
SSE chat, the JSON chat, the OpenAI-compatible route (streamed and not) and the AI SDK route."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY
from tests.support.server import parse_sse

pytestmark = pytest.mark.anyio

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
STALLS = {"reply": "abcdefgh", "delta_chars": 2, "delay_ms": 0, "stall_after": 1}
SLOW = {"reply": "x" * 2_000, "delta_chars": 1, "delay_ms": 100}


@pytest.fixture(params=["idle", "max_run_seconds"])
def limit(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A stalled model meets the idle limit; a slow one that never stops meets the run's deadline."""
    if request.param == "idle":
        monkeypatch.setenv("AGENTSTREAM_IDLE_TIMEOUT_SECONDS", "0.5")
        return STALLS
    monkeypatch.setenv("AGENTSTREAM_MAX_RUN_SECONDS", "2")
    monkeypatch.setenv("AGENTSTREAM_DEADLINE_MARGIN_MS", "500")
    return SLOW


@pytest.fixture
async def client(
    limit: dict[str, Any], dynamodb: Any, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    from agentstream.config import Settings
    from agentstream.store import Store
    from agentstream.web.app import create_app

    monkeypatch.setenv("AGENTSTREAM_ADMIN_KEY", ADMIN_KEY)
    monkeypatch.setenv("AGENTSTREAM_LOG_FLUSH_SECONDS", "0.1")
    app = create_app(Settings(), Store("agentstream", dynamodb))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://test", headers=AUTH
    ) as c:
        yield c


async def _agent(c: httpx.AsyncClient, options: dict[str, Any]) -> str:
    body = {"name": "slow", "model": {"provider": "scripted", "name": "s", "options": options}}
    r = await c.post("/api/v1/agents", json=body)
    assert r.status_code == 201, r.text
    agent: str = r.json()["data"]["id"]
    return agent


async def _timed(c: httpx.AsyncClient, path: str, body: dict[str, Any]) -> httpx.Response:
    started = time.monotonic()
    r = await c.post(path, json=body)
    assert time.monotonic() - started < 6, path
    return r


async def test_every_route_ends_a_run_that_would_go_on(
    client: httpx.AsyncClient, limit: dict[str, Any]
) -> None:
    c = client
    agent = await _agent(c, limit)
    chat = {"message": "hi", "user_id": "u", "stream_options": {"on_disconnect": "continue"}}

    r = await _timed(c, f"/api/v1/agents/{agent}/chat/stream", chat)
    events = [data for _, data in parse_sse(r.content)]
    assert [e["chunk_type"] for e in events].count("done") == 1
    assert events[-1]["status"] == "timeout"

    r = await _timed(c, f"/api/v1/agents/{agent}/chat", {"message": "hi", "user_id": "u"})
    assert r.json()["data"]["status"] == "timeout"

    compat = {"model": agent, "messages": [{"role": "user", "content": "hi"}]}
    r = await _timed(c, "/v1/chat/completions", {**compat, "stream": True})
    assert r.content.rstrip().endswith(b"data: [DONE]")
    assert b"the run reached its time limit" in r.content
    r = await _timed(c, "/v1/chat/completions", compat)
    assert r.status_code == 504, r.text

    ui = {
        "id": "chat1",
        "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}],
    }
    r = await _timed(c, f"/api/v1/agents/{agent}/chat/ui", ui)
    assert r.content.rstrip().endswith(b"data: [DONE]")
    assert b"the run reached its time limit" in r.content

    # and every one of those runs is recorded as ended, not running
    for run_id in {r.headers["x-run-id"]} | {e["run_id"] for e in events if e["chunk_type"] == "start"}:
        record = (await c.get(f"/api/v1/runs/{run_id}")).json()["data"]
        assert record["status"] == "timeout"
