from __future__ import annotations

from typing import Any

import pytest

from agentstream.core.agents import AgentPatch, AgentSpec, ModelConfig
from agentstream.errors import BadRequest, Conflict, NotFound
from agentstream.store import Store, create_table
from agentstream.store.schema import ATTRIBUTE_DEFINITIONS, KEY_SCHEMA, TTL_ATTRIBUTE


def _spec(name: str = "a") -> AgentSpec:
    return AgentSpec(name=name, model=ModelConfig(provider="scripted", name="m"))


@pytest.fixture
def store(dynamodb: Any) -> Store:
    return Store("agentstream", dynamodb)


def test_init_table_creates_the_schema_with_ttl_and_is_idempotent(dynamodb: Any) -> None:
    table = dynamodb.describe_table(TableName="agentstream")["Table"]
    assert table["KeySchema"] == KEY_SCHEMA
    assert sorted(table["AttributeDefinitions"], key=str) == sorted(ATTRIBUTE_DEFINITIONS, key=str)
    ttl = dynamodb.describe_time_to_live(TableName="agentstream")["TimeToLiveDescription"]
    assert ttl["AttributeName"] == TTL_ATTRIBUTE
    assert create_table("agentstream", dynamodb) is False


@pytest.mark.anyio
async def test_agent_crud(store: Store) -> None:
    agent = await store.agents.create("t1", _spec())
    assert agent.id.startswith("agt_")
    assert await store.agents.get("t1", agent.id) == agent
    updated = await store.agents.update("t1", agent.id, AgentPatch(name="renamed", tools=["calculator"]))
    assert (updated.name, updated.tools, updated.version) == ("renamed", ["calculator"], 2)
    assert updated.model == agent.model
    assert await store.agents.get("t1", agent.id) == updated
    await store.agents.delete("t1", agent.id)
    with pytest.raises(NotFound):
        await store.agents.get("t1", agent.id)
    with pytest.raises(NotFound):
        await store.agents.delete("t1", agent.id)
    with pytest.raises(NotFound):
        await store.agents.update("t1", agent.id, AgentPatch(name="x"))


@pytest.mark.anyio
async def test_tenants_do_not_see_each_other(store: Store) -> None:
    agent = await store.agents.create("t1", _spec())
    with pytest.raises(NotFound):
        await store.agents.get("t2", agent.id)
    assert (await store.agents.list("t2", limit=10, cursor=None)).items == []


@pytest.mark.anyio
async def test_list_paginates_in_creation_order(store: Store) -> None:
    created = [await store.agents.create("t1", _spec(f"a{i}")) for i in range(7)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await store.agents.list("t1", limit=3, cursor=cursor)
        seen += [a.id for a in page.items]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [a.id for a in created]
    assert pages >= 3


@pytest.mark.anyio
async def test_a_cursor_from_another_tenant_or_garbage_is_refused(store: Store) -> None:
    for i in range(2):
        await store.agents.create("t1", _spec(f"a{i}"))
    page = await store.agents.list("t1", limit=1, cursor=None)
    assert page.next_cursor
    with pytest.raises(BadRequest):
        await store.agents.list("t2", limit=1, cursor=page.next_cursor)
    with pytest.raises(BadRequest):
        await store.agents.list("t1", limit=1, cursor="!!not-a-cursor")


@pytest.mark.anyio
async def test_concurrent_update_conflicts(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    agent = await store.agents.create("t1", _spec())
    stale = agent
    await store.agents.update("t1", agent.id, AgentPatch(name="first"))

    async def stale_get(tenant: str, agent_id: str) -> Any:
        return stale

    monkeypatch.setattr(store.agents, "get", stale_get)
    with pytest.raises(Conflict):
        await store.agents.update("t1", agent.id, AgentPatch(name="second"))


@pytest.mark.anyio
async def test_history_keeps_the_last_messages_in_order(store: Store) -> None:
    for i in range(3):
        await store.conversations.append_turn(
            "t1", "a", "u", "s", run_id=f"r{i}", user_text=f"q{i}", assistant_text=f"a{i}"
        )
        session = await store.conversations.get_session("t1", "a", "u", "s")
        assert session.message_count == 2 * (i + 1)
    recent = await store.conversations.recent("t1", "a", "u", "s", limit=4)
    assert [m.content for m in recent] == ["q1", "a1", "q2", "a2"]
    assert [m.role for m in recent] == ["user", "assistant"] * 2
    assert await store.conversations.recent("t1", "a", "u", "other", limit=4) == []
    assert await store.conversations.recent("t2", "a", "u", "s", limit=4) == []


@pytest.mark.anyio
async def test_a_chats_running_run_is_one_small_item_that_expires(store: Store, dynamodb: Any) -> None:
    assert await store.active_runs.get("t1", "agt_1", "chat1") is None
    await store.active_runs.put("t1", "agt_1", "chat1", "run_a", until_ms=1_800_000_000_000)
    await store.active_runs.put("t1", "agt_1", "chat1", "run_b", until_ms=1_800_000_000_000)
    assert await store.active_runs.get("t1", "agt_1", "chat1") == "run_b"  # the latest run of the chat
    assert await store.active_runs.get("t2", "agt_1", "chat1") is None  # tenants apart
    assert await store.active_runs.get("t1", "agt_2", "chat1") is None
    item = dynamodb.get_item(
        TableName="agentstream", Key={"pk": {"S": "T#t1#A#agt_1#C#chat1"}, "sk": {"S": "ACTIVE"}}
    )["Item"]
    assert item[TTL_ATTRIBUTE] == {"N": str(1_800_000_000 + 3600)}
