"""Sessions, memory, API keys and tenants, runs: every access pattern through the HTTP API (moto)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from agentstream.core.providers.base import ModelRequest, ProviderEvent
from agentstream.core.providers.scripted import ScriptedProvider
from agentstream.store import memories as memories_module
from agentstream.store.schema import TTL_ATTRIBUTE
from tests.conftest import ADMIN_KEY
from tests.support.server import parse_sse

SCRIPTED = {"provider": "scripted", "name": "demo", "options": {"delay_ms": 0}}

pytestmark = pytest.mark.anyio


def _client(app: Any, key: str = ADMIN_KEY) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://test", headers={"Authorization": f"Bearer {key}"}
    )


@pytest.fixture
async def admin(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(app) as c:
        yield c


async def _key(admin: httpx.AsyncClient, tenant: str) -> str:
    r = await admin.post("/api/v1/keys", json={"tenant": tenant, "name": f"{tenant} key"})
    assert r.status_code == 201, r.text
    key: str = r.json()["data"]["key"]
    return key


async def _agent(client: httpx.AsyncClient, **fields: Any) -> str:
    r = await client.post("/api/v1/agents", json={"name": "a", "model": SCRIPTED, **fields})
    assert r.status_code == 201, r.text
    agent_id: str = r.json()["data"]["id"]
    return agent_id


# API keys and tenants


async def test_keys_are_shown_once_and_stored_as_hashes(
    app: Any, admin: httpx.AsyncClient, dynamodb: Any
) -> None:
    r = await admin.post("/api/v1/keys", json={"tenant": "acme", "name": "ci"})
    created = r.json()["data"]
    assert created["key"].startswith(f"ask_{created['id']}_")
    listed = (await admin.get("/api/v1/keys")).json()["data"]
    assert listed == [{k: v for k, v in created.items() if k != "key"}]
    items = dynamodb.scan(TableName="agentstream")["Items"]
    assert created["key"] not in json.dumps(items)  # only its hash is stored
    async with _client(app, created["key"]) as acme:
        assert (await acme.get("/api/v1/agents")).status_code == 200
        r = await acme.get("/api/v1/keys")
        assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden")
        assert (await acme.post("/api/v1/keys", json={"tenant": "acme"})).status_code == 403
    assert (await admin.delete(f"/api/v1/keys/{created['id']}")).status_code == 204
    async with _client(app, created["key"]) as revoked:
        assert (await revoked.get("/api/v1/agents")).status_code == 401
    assert (await admin.delete(f"/api/v1/keys/{created['id']}")).status_code == 404


async def test_a_forged_key_with_a_real_id_is_refused(app: Any, admin: httpx.AsyncClient) -> None:
    key = await _key(admin, "acme")
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    async with _client(app, forged) as c:
        assert (await c.get("/api/v1/agents")).status_code == 401


async def test_tenants_cannot_reach_each_others_records(app: Any, admin: httpx.AsyncClient) -> None:
    acme_key, globex_key = await _key(admin, "acme"), await _key(admin, "globex")
    async with _client(app, acme_key) as acme, _client(app, globex_key) as globex:
        agent = await _agent(acme, tools=["remember"])
        chat = await acme.post(f"/api/v1/agents/{agent}/chat", json={"message": "hi", "user_id": "u"})
        run_id = chat.json()["data"]["run_id"]
        await acme.post(f"/api/v1/agents/{agent}/memories", json={"user_id": "u", "content": "likes tea"})
        attempts = [
            ("GET", f"/api/v1/agents/{agent}", None),
            ("PATCH", f"/api/v1/agents/{agent}", {"name": "stolen"}),
            ("POST", f"/api/v1/agents/{agent}/chat", {"message": "hi", "user_id": "u"}),
            ("POST", f"/api/v1/agents/{agent}/chat/stream", {"message": "hi", "user_id": "u"}),
            ("GET", f"/api/v1/agents/{agent}/sessions?user_id=u", None),
            ("GET", f"/api/v1/agents/{agent}/sessions/default/messages?user_id=u", None),
            ("DELETE", f"/api/v1/agents/{agent}/sessions/default?user_id=u", None),
            ("GET", f"/api/v1/agents/{agent}/memories?user_id=u", None),
            ("POST", f"/api/v1/agents/{agent}/memories", {"user_id": "u", "content": "x"}),
            ("DELETE", f"/api/v1/agents/{agent}/memories?user_id=u", None),
            ("GET", f"/api/v1/runs/{run_id}", None),
            ("GET", f"/api/v1/runs/{run_id}/events", None),
            ("POST", f"/api/v1/runs/{run_id}/cancel", None),
            ("DELETE", f"/api/v1/agents/{agent}", None),
        ]
        for method, path, body in attempts:
            r = await globex.request(method, path, json=body)
            assert r.status_code == 404, (method, path, r.status_code)
        assert (await globex.get("/api/v1/agents")).json()["data"] == []
        # and nothing changed for acme
        assert (await acme.get(f"/api/v1/agents/{agent}")).json()["data"]["name"] == "a"
        assert len((await acme.get(f"/api/v1/agents/{agent}/memories?user_id=u")).json()["data"]) == 1
        # the admin key is the `default` tenant: it does not see acme's agent either
        assert (await admin.get(f"/api/v1/agents/{agent}")).status_code == 404


# sessions and messages


async def test_sessions_and_messages(admin: httpx.AsyncClient) -> None:
    agent = await _agent(admin)
    for session, message in [("s1", "one"), ("s1", "two"), ("s2", "three"), ("s1", "four")]:
        r = await admin.post(
            f"/api/v1/agents/{agent}/chat", json={"message": message, "user_id": "li", "session_id": session}
        )
        assert r.status_code == 200
    sessions = (await admin.get(f"/api/v1/agents/{agent}/sessions", params={"user_id": "li"})).json()
    assert {s["session_id"]: s["message_count"] for s in sessions["data"]} == {"s1": 6, "s2": 2}
    assert (await admin.get(f"/api/v1/agents/{agent}/sessions", params={"user_id": "nobody"})).json()[
        "data"
    ] == []

    url = f"/api/v1/agents/{agent}/sessions/s1/messages"
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"user_id": "li", "limit": 4, **({"cursor": cursor} if cursor else {})}
        page = (await admin.get(url, params=params)).json()
        seen += page["data"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert [m["role"] for m in seen] == ["user", "assistant"] * 3
    assert [m["content"] for m in seen if m["role"] == "user"] == ["one", "two", "four"]
    assert all(m["run_id"].startswith("run_") for m in seen)

    assert (
        await admin.delete(f"/api/v1/agents/{agent}/sessions/s1", params={"user_id": "li"})
    ).status_code == 204
    r = await admin.get(url, params={"user_id": "li"})
    assert r.status_code == 404
    sessions = (await admin.get(f"/api/v1/agents/{agent}/sessions", params={"user_id": "li"})).json()
    assert [s["session_id"] for s in sessions["data"]] == ["s2"]
    assert (
        await admin.delete(f"/api/v1/agents/{agent}/sessions/s1", params={"user_id": "li"})
    ).status_code == 404


async def test_a_reply_larger_than_an_item_is_stored_and_read_back_exactly(admin: httpx.AsyncClient) -> None:
    piece = "长回复 🙂 "
    reply = piece * 30_000  # 180k characters, ~570 KB of UTF-8: more than one item
    options = {"reply": piece, "repeat": 30_000, "delta_chars": 5000, "delay_ms": 0}
    agent = await _agent(admin, model={**SCRIPTED, "options": options})
    r = await admin.post(f"/api/v1/agents/{agent}/chat/stream", json={"message": "go", "user_id": "u"})
    live = parse_sse(r.content)
    assert live[-1][1]["final_response"] == reply
    messages = (
        await admin.get(f"/api/v1/agents/{agent}/sessions/default/messages", params={"user_id": "u"})
    ).json()
    assert messages["data"][1]["content"] == reply
    run_id = r.headers["x-run-id"]
    replay = parse_sse((await admin.get(f"/api/v1/runs/{run_id}/events")).content)
    assert replay == live
    # and the next turn gets the long reply back as history, whole
    r = await admin.post(f"/api/v1/agents/{agent}/chat", json={"message": "again", "user_id": "u"})
    assert r.json()["data"]["usage"]["input_tokens"] > 30_000


# memory


class RecordingProvider:
    def __init__(self) -> None:
        self.requests: list[ModelRequest] = []
        self._inner = ScriptedProvider()

    async def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
        self.requests.append(request)
        async for event in self._inner.stream(request):
            yield event


async def test_the_remember_tool_keeps_facts_that_later_runs_see(app: Any, admin: httpx.AsyncClient) -> None:
    provider = RecordingProvider()

    async def factory(name: str, settings: Any) -> RecordingProvider:
        return provider

    app.state.chat._providers = factory
    agent = await _agent(admin, tools=["remember"])
    url = f"/api/v1/agents/{agent}/chat"
    first = (await admin.post(url, json={"message": "remember that my name is Li", "user_id": "li"})).json()
    assert first["data"]["tool_events"][0]["arguments"] == {"fact": "my name is Li"}
    assert (first["data"]["memories_updated"], first["data"]["memories_count"]) == (True, 1)
    memories = (await admin.get(f"/api/v1/agents/{agent}/memories", params={"user_id": "li"})).json()["data"]
    assert [m["content"] for m in memories] == ["my name is Li"]

    second = (
        await admin.post(url, json={"message": "who am I?", "user_id": "li", "session_id": "new"})
    ).json()
    assert second["data"]["memories_count"] == 1
    system = provider.requests[-1].messages[0]
    assert system.role == "system"
    assert "- my name is Li" in system.content
    # another user of the same agent has no such memory
    await admin.post(url, json={"message": "who am I?", "user_id": "zhang"})
    assert "my name is Li" not in provider.requests[-1].messages[0].content


async def test_memory_routes_and_bounds(
    admin: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, dynamodb: Any
) -> None:
    agent = await _agent(admin)
    url = f"/api/v1/agents/{agent}/memories"
    r = await admin.post(url, json={"user_id": "u", "content": "prefers short answers", "ttl_days": 30})
    assert r.status_code == 201
    item = r.json()["data"]
    assert item["expires_at"] > 0
    stored = dynamodb.scan(
        TableName="agentstream",
        FilterExpression="begins_with(sk, :m)",
        ExpressionAttributeValues={":m": {"S": "MEM#"}},
    )["Items"]
    assert int(stored[0][TTL_ATTRIBUTE]["N"]) == item["expires_at"]
    assert (await admin.post(url, json={"user_id": "u", "content": "x" * 2001})).status_code == 422
    assert (await admin.post(url, json={"user_id": "u", "content": ""})).status_code == 422
    monkeypatch.setattr(memories_module, "MAX_ITEMS", 2)
    assert (await admin.post(url, json={"user_id": "u", "content": "second"})).status_code == 201
    r = await admin.post(url, json={"user_id": "u", "content": "third"})
    assert (r.status_code, r.json()["error"]["code"]) == (409, "conflict")
    r = await admin.delete(f"{url}/{item['id']}", params={"user_id": "u"})
    assert r.status_code == 204
    assert [m["content"] for m in (await admin.get(url, params={"user_id": "u"})).json()["data"]] == [
        "second"
    ]
    assert (await admin.delete(f"{url}/{item['id']}", params={"user_id": "u"})).status_code == 404
    assert (await admin.delete(url, params={"user_id": "u"})).status_code == 204
    assert (await admin.get(url, params={"user_id": "u"})).json()["data"] == []


# runs


async def test_a_run_is_recorded_and_replays_exactly(admin: httpx.AsyncClient, dynamodb: Any) -> None:
    agent = await _agent(admin, tools=["calculator"])
    r = await admin.post(
        f"/api/v1/agents/{agent}/chat/stream", json={"message": "what is 2+3?", "user_id": "u"}
    )
    run_id = r.headers["x-run-id"]
    live = parse_sse(r.content)
    run = (await admin.get(f"/api/v1/runs/{run_id}")).json()["data"]
    assert run["status"] == "completed"
    assert run["agent_id"] == agent
    assert run["events"] == len(live)
    assert run["usage"] == live[-1][1]["usage"]
    assert run["ended_at"]

    replay = await admin.get(f"/api/v1/runs/{run_id}/events")
    assert replay.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert parse_sse(replay.content) == live
    after = parse_sse((await admin.get(f"/api/v1/runs/{run_id}/events", params={"after": 2})).content)
    assert after == live[3:]
    resumed = await admin.get(f"/api/v1/runs/{run_id}/events", headers={"Last-Event-ID": "3"})
    assert parse_sse(resumed.content) == live[4:]
    r = await admin.get(f"/api/v1/runs/{run_id}/events", headers={"Last-Event-ID": "abc"})
    assert r.status_code == 422
    assert (await admin.get("/api/v1/runs/run_missing")).status_code == 404
    r = await admin.post(f"/api/v1/runs/{run_id}/cancel")
    assert (r.status_code, r.json()["error"]["code"]) == (409, "conflict")

    items = dynamodb.query(
        TableName="agentstream",
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"T#default#R#{run_id}"}},
    )["Items"]
    assert all(TTL_ATTRIBUTE in i for i in items)
    assert len(items) < len(live)  # events are batched, not one write per event


async def test_patch_with_if_match(admin: httpx.AsyncClient) -> None:
    agent = await _agent(admin)
    r = await admin.get(f"/api/v1/agents/{agent}")
    etag = r.headers["etag"]
    assert etag == '"1"'
    r = await admin.patch(f"/api/v1/agents/{agent}", json={"name": "b"}, headers={"If-Match": etag})
    assert (r.status_code, r.headers["etag"]) == (200, '"2"')
    r = await admin.patch(f"/api/v1/agents/{agent}", json={"name": "c"}, headers={"If-Match": etag})
    assert (r.status_code, r.json()["error"]["code"]) == (409, "conflict")
    r = await admin.patch(f"/api/v1/agents/{agent}", json={"name": "c"}, headers={"If-Match": "nope"})
    assert r.status_code == 422


async def test_history_ttl_is_set_when_configured(dynamodb: Any, settings: Any) -> None:
    from agentstream.store import Store

    store = Store("agentstream", dynamodb, history_ttl_days=7)
    await store.conversations.append_turn("t", "a", "u", "s", run_id="r", user_text="q", assistant_text="a")
    items = dynamodb.scan(
        TableName="agentstream",
        FilterExpression="begins_with(sk, :m)",
        ExpressionAttributeValues={":m": {"S": "MSG#"}},
    )["Items"]
    assert len(items) == 2
    assert all(TTL_ATTRIBUTE in i for i in items)
