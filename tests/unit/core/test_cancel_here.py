"""A cancel stops a run of this process at once, before and whatever the store answers (a store that
hangs, throttles or fails), then records the flag within a bound."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from agentstream.config import Settings
from agentstream.core.agents import Agent, ModelConfig
from agentstream.core.events import Done
from agentstream.core.service import ChatInput, ChatService
from agentstream.errors import Conflict, NotFound, StoreUnavailable
from tests.support.memory_store import MemoryStore
from tests.support.server import parse_sse

pytestmark = pytest.mark.anyio

ADMIN = "cancel-test-admin"
SLOW = {"reply": "x" * 500, "delta_chars": 1, "delay_ms": 20}  # 10 s of text


async def _hang(tenant: str, run_id: str) -> None:
    await asyncio.sleep(3_600)


async def _throttled(tenant: str, run_id: str) -> None:
    await asyncio.sleep(0.1)
    raise StoreUnavailable("the data store failed (ProvisionedThroughputExceededException)")


def _chat(tenant: str = "t") -> tuple[ChatService, MemoryStore]:
    store = MemoryStore()
    model = ModelConfig(provider="scripted", name="s", options=SLOW)
    store.agents.items[(tenant, "agt_1")] = Agent(
        id="agt_1", name="a", model=model, created_at="", updated_at=""
    )
    return ChatService(store, Settings(log_flush_seconds=0.05, heartbeat_seconds=0.05)), store


@pytest.mark.parametrize("store_answer", [_hang, _throttled], ids=["hangs", "throttles"])
async def test_a_run_here_stops_at_once_whatever_the_store_answers(store_answer: Any) -> None:
    chat, store = _chat()
    store.runs.request_cancel = store_answer  # type: ignore[method-assign]
    run = await chat.start("t", "agt_1", ChatInput("hi"))
    events = asyncio.ensure_future(_done_of(run.events()))
    await asyncio.sleep(0.3)
    asked = time.monotonic()
    cancel = asyncio.ensure_future(chat.cancel("t", run.run_id))
    done, done_at = await asyncio.wait_for(events, 2)
    assert done.status == "cancelled"
    assert done_at - asked < 1.0  # before the store answered anything (it never does, or fails)
    assert await asyncio.wait_for(cancel, 5) is True  # the flag's write is bounded, and its failure not ours
    assert time.monotonic() - asked < 4


async def _done_of(events: AsyncIterator[Any]) -> tuple[Done, float]:
    async for _, event in events:
        if isinstance(event, Done):
            return event, time.monotonic()
    raise AssertionError("no done")


async def test_a_run_elsewhere_gets_a_bounded_503_when_the_store_hangs() -> None:
    chat, store = _chat()
    store.runs.request_cancel = _hang  # type: ignore[method-assign]
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await chat.cancel("t", "run_elsewhere")
    assert time.monotonic() - started < 4


async def test_a_run_of_another_tenant_is_not_stopped() -> None:
    chat, store = _chat()
    run = await chat.start("t", "agt_1", ChatInput("hi"))

    async def not_found(tenant: str, run_id: str) -> None:
        raise NotFound(f"run {run_id} not found")

    store.runs.request_cancel = not_found  # type: ignore[method-assign]
    with pytest.raises(NotFound):
        await chat.cancel("intruder", run.run_id)
    assert not run.control.stopped
    run.stop()
    await run.wait()


async def test_a_run_that_already_ended_is_a_409() -> None:
    chat, _ = _chat()
    run = await chat.start("t", "agt_1", ChatInput("hi"))
    run.stop()
    await run.wait()
    with pytest.raises(Conflict):
        await chat.cancel("t", run.run_id)


async def test_the_cancel_route_answers_202_and_the_stream_ends_cancelled_while_the_store_hangs() -> None:
    from agentstream.web.app import create_app

    chat, store = _chat("default")  # the admin key's tenant
    store.runs.request_cancel = _hang  # type: ignore[method-assign]
    app = create_app(Settings(admin_key=ADMIN), store)  # type: ignore[arg-type]
    app.state.chat = chat
    headers = {"Authorization": f"Bearer {ADMIN}"}
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers=headers, timeout=30
    ) as c:
        stream = asyncio.ensure_future(c.post("/api/v1/agents/agt_1/chat/stream", json={"message": "hi"}))
        for _ in range(100):
            if chat.active or stream.done():
                break
            await asyncio.sleep(0.05)
        assert chat.active, stream.result().text if stream.done() else "the run did not start"
        [(_, run_id)] = list(chat.active)
        await asyncio.sleep(0.2)
        asked = time.monotonic()
        r = await c.post(f"/api/v1/runs/{run_id}/cancel")
        answered = time.monotonic() - asked
        body = (await asyncio.wait_for(stream, 5)).content
    assert r.status_code == 202, r.text
    assert answered < 4
    events = [data for _, data in parse_sse(body)]
    assert events[-1]["chunk_type"] == "done"
    assert events[-1]["status"] == "cancelled"
    assert len(events[-1]["final_response"]) < len(SLOW["reply"])  # type: ignore[arg-type]
