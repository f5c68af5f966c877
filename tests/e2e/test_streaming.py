"""Streaming through a real uvicorn socket: timing proves events leave as they are produced."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from agentstream.core.providers.base import ModelRequest, ProviderEvent, StepEnd, TextChunk
from tests.conftest import ADMIN_KEY
from tests.support.server import read_sse

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


def _create_agent(base: str, model: dict[str, Any]) -> str:
    r = httpx.post(f"{base}/api/v1/agents", json={"name": "e2e", "model": model}, headers=AUTH)
    assert r.status_code == 201, r.text
    agent_id: str = r.json()["data"]["id"]
    return agent_id


def test_first_content_arrives_long_before_the_last(live_server: str) -> None:
    reply = "Streaming is real: 流式输出不丢字 🙂 and it ends exactly."
    agent = _create_agent(
        live_server,
        {"provider": "scripted", "name": "s", "options": {"reply": reply, "delta_chars": 4, "delay_ms": 100}},
    )
    start = time.monotonic()
    stream = read_sse(f"{live_server}/api/v1/agents/{agent}/chat/stream", {"message": "go"}, key=ADMIN_KEY)
    contents = [e for e in stream.events if e.data["chunk_type"] == "content"]
    assert len(contents) == len(range(0, len(reply), 4))
    # 14 deltas 100 ms apart: a buffered server would deliver them all at the end, together
    assert contents[0].at - start < 0.6
    assert contents[-1].at - contents[0].at > 0.8
    gaps = [b.at - a.at for a, b in itertools.pairwise(contents)]
    assert sum(g > 0.05 for g in gaps) >= len(gaps) // 2
    assert stream.content == reply == stream.events[-1].data["final_response"]


@pytest.mark.parametrize("chunk_size", [1, 3, 10])
def test_chunk_size_over_the_socket_is_exact(live_server: str, chunk_size: int) -> None:
    reply = "你好世界 👨‍👩‍👧 e\u0301 done"
    agent = _create_agent(
        live_server, {"provider": "scripted", "name": "s", "options": {"reply": reply, "delta_chars": 5}}
    )
    body = {"message": "go", "stream_options": {"chunk_size": chunk_size}}
    stream = read_sse(f"{live_server}/api/v1/agents/{agent}/chat/stream", body, key=ADMIN_KEY)
    pieces = [e["content"] for e in stream.of("content")]
    assert "".join(pieces) == reply
    assert all(0 < len(p) <= chunk_size for p in pieces)
    assert "\ufffd" not in stream.raw.decode("utf-8")


def test_keepalive_pings_while_the_model_is_slow(live_server: str, app: Any) -> None:
    app.state.settings.sse_ping_seconds = 0.1
    agent = _create_agent(
        live_server,
        {
            "provider": "scripted",
            "name": "s",
            "options": {"reply": "slow reply", "delta_chars": 5, "delay_ms": 400},
        },
    )
    stream = read_sse(f"{live_server}/api/v1/agents/{agent}/chat/stream", {"message": "go"}, key=ADMIN_KEY)
    assert stream.comments.count("ping") >= 2
    assert stream.events[-1].data["chunk_type"] == "done"
    assert b"\n: ping\n\n" in stream.raw or stream.raw.startswith(b": ping\n\n")


class _StallingProvider:
    """Sends one delta, then waits forever; records when its stream was closed."""

    def __init__(self) -> None:
        self.closed_at: float | None = None

    async def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
        try:
            yield TextChunk("first")
            await asyncio.sleep(3600)
            yield StepEnd("stop")
        finally:
            self.closed_at = time.monotonic()


@pytest.mark.parametrize("on_disconnect", ["cancel", "continue"])
def test_client_disconnect_stops_the_run_and_closes_the_upstream(
    live_server: str, app: Any, on_disconnect: str
) -> None:
    provider = _StallingProvider()

    async def factory(name: str, settings: Any) -> _StallingProvider:
        return provider

    app.state.chat._providers = factory
    agent = _create_agent(live_server, {"provider": "scripted", "name": "s"})
    body = {"message": "go", "stream_options": {"on_disconnect": on_disconnect}}
    stream = read_sse(f"{live_server}/api/v1/agents/{agent}/chat/stream", body, key=ADMIN_KEY, stop_after=2)
    gone = time.monotonic()
    assert [e.data["chunk_type"] for e in stream.events] == ["start", "content"]
    deadline = gone + 2
    while provider.closed_at is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if on_disconnect == "cancel":
        assert provider.closed_at is not None
        assert provider.closed_at - gone < 1.0
    else:
        assert provider.closed_at is None  # the run goes on without its reader
