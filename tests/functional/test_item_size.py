"""Oversized bodies are the caller's error (4xx in the contract's shape), never 503 store_unavailable, and
are not logged as server failures; DynamoDB's item-size refusal maps to 413 as a last line of defence."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from agentstream.core.agents import Agent, MemoryConfig, ModelConfig
from agentstream.errors import PayloadTooLarge
from agentstream.store import Store
from agentstream.store._table import MAX_ITEM_BYTES, Table, key
from tests.conftest import ADMIN_KEY

pytestmark = pytest.mark.anyio

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
HUGE_OPTIONS = {"reply": "x" * 500_000}


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://test", headers=AUTH
    ) as c:
        yield c


def _no_server_failure_logged(caplog: pytest.LogCaptureFixture) -> None:
    assert [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("agentstream") and r.levelno >= logging.WARNING
    ] == []


async def test_500_kb_of_options_is_a_422_at_create_and_patch(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    model = {"provider": "scripted", "name": "s", "options": HUGE_OPTIONS}
    r = await client.post("/api/v1/agents", json={"name": "big", "model": model})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_request"
    assert "model.options" in error["message"]
    assert "bytes of JSON, at most 32768" in error["message"]
    r = await client.post("/api/v1/agents", json={"name": "small", "model": {**model, "options": {}}})
    agent = r.json()["data"]["id"]
    r = await client.patch(f"/api/v1/agents/{agent}", json={"model": model})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_request")
    _no_server_failure_logged(caplog)


async def test_an_agent_past_the_item_limit_is_refused_before_any_request(dynamodb: Any) -> None:
    store = Store("agentstream", dynamodb)
    big = Agent.model_construct(  # past every check of a body (they bound it): the write still refuses it
        name="big",
        instructions="长" * 150_000,
        model=ModelConfig(provider="scripted", name="s"),
        tools=[],
        memory=MemoryConfig(),
        id="agt_big",
        created_at="now",
        updated_at="now",
        version=1,
    )
    with pytest.raises(PayloadTooLarge) as caught:
        await store.agents._put("t", big, "attribute_not_exists(pk)", {})
    assert (caught.value.status, caught.value.code) == (413, "payload_too_large")
    assert dynamodb.scan(TableName="agentstream")["Count"] == 0


async def test_dynamodbs_item_size_refusal_is_a_413(dynamodb: Any) -> None:
    table = Table("agentstream", dynamodb)
    item = {**key("T#t", "X#1"), "data": {"S": "y" * (MAX_ITEM_BYTES + 1)}}
    with pytest.raises(PayloadTooLarge):
        await table.call(lambda c: c.put_item(TableName="agentstream", Item=item))
    with pytest.raises(PayloadTooLarge):
        await table.put_items([item])


async def test_the_413_reaches_the_client_in_the_contracts_shape_and_is_not_logged_as_a_failure(
    client: httpx.AsyncClient,
    app: Any,
    dynamodb: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = Table("agentstream", dynamodb)

    async def oversized(tenant: str, spec: Any) -> Any:
        item = {**key(f"T#{tenant}", "AGENT#x"), "data": {"S": "y" * (MAX_ITEM_BYTES + 1)}}
        return await table.call(lambda c: c.put_item(TableName="agentstream", Item=item))

    monkeypatch.setattr(app.state.store.agents, "create", oversized)
    r = await client.post(
        "/api/v1/agents", json={"name": "a", "model": {"provider": "scripted", "name": "s"}}
    )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"
    assert "400 KB" in r.json()["error"]["message"]
    _no_server_failure_logged(caplog)
