"""The HTTP API through the ASGI app (buffered transport: content and status codes, not timing)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY
from tests.support.server import parse_sse

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
SCRIPTED = {"provider": "scripted", "name": "demo"}


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=AUTH) as c:
        yield c


async def _agent(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"name": "helper", "model": SCRIPTED, **fields}
    r = await client.post("/api/v1/agents", json=body)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


def _events(raw: bytes) -> list[dict[str, Any]]:
    return [data for _, data in parse_sse(raw)]


@pytest.mark.anyio
async def test_healthz_needs_no_auth(app: Any) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as c:
        r = await c.get("/healthz")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing bearer token"),
        ({"Authorization": "Bearer nope"}, "invalid API key"),
        ({"Authorization": "Basic x"}, "missing"),
    ],
)
async def test_auth_errors_are_401_with_the_contract_body(
    app: Any, headers: dict[str, str], message: str
) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as c:
        for method, path in [("GET", "/api/v1/agents"), ("POST", "/api/v1/agents/x/chat/stream")]:
            r = await c.request(method, path, headers=headers, json={"message": ""})
            assert r.status_code == 401
            assert r.json()["error"]["code"] == "unauthorized"
            assert message in r.json()["error"]["message"]
            assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.anyio
async def test_no_admin_key_configured_means_nobody_gets_in(
    dynamodb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentstream.config import Settings
    from agentstream.store import Store
    from agentstream.web.app import create_app

    monkeypatch.delenv("AGENTSTREAM_ADMIN_KEY", raising=False)
    app = create_app(Settings(), Store("agentstream", dynamodb))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://test", headers=AUTH
    ) as c:
        assert (await c.get("/api/v1/agents")).status_code == 401


@pytest.mark.anyio
async def test_agent_crud_over_http(client: httpx.AsyncClient) -> None:
    agent = await _agent(client, tools=["calculator"], instructions="Be brief.")
    assert agent["tools"] == ["calculator"]
    r = await client.get("/api/v1/agents")
    assert r.json()["data"][0]["id"] == agent["id"]  # the seed's clients read .data[0].id
    assert r.json()["next_cursor"] is None
    r = await client.patch(f"/api/v1/agents/{agent['id']}", json={"name": "renamed"})
    assert (r.status_code, r.json()["data"]["name"], r.json()["data"]["instructions"]) == (
        200,
        "renamed",
        "Be brief.",
    )
    assert (await client.delete(f"/api/v1/agents/{agent['id']}")).status_code == 204
    r = await client.get(f"/api/v1/agents/{agent['id']}")
    assert r.status_code == 404
    assert r.json() == {"error": {"code": "not_found", "message": f"agent {agent['id']} not found"}}


@pytest.mark.anyio
async def test_list_pagination_over_http(client: httpx.AsyncClient) -> None:
    ids = [(await _agent(client, name=f"a{i}"))["id"] for i in range(5)]
    seen, cursor = [], None
    while True:
        r = await client.get("/api/v1/agents", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        seen += [a["id"] for a in r.json()["data"]]
        cursor = r.json()["next_cursor"]
        if not cursor:
            break
    assert seen == ids
    r = await client.get("/api/v1/agents", params={"cursor": "garbage"})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_cursor")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"name": "x", "model": {"provider": "nope", "name": "m"}}, "unknown provider 'nope'"),
        ({"name": "x", "model": SCRIPTED, "tools": ["rm_rf"]}, "unknown tool(s) ['rm_rf']"),
        ({"name": "", "model": SCRIPTED}, "name:"),
        ({"name": "x"}, "model: Field required"),
        ({"name": "x", "model": SCRIPTED, "colour": "red"}, "colour: Extra inputs are not permitted"),
        ({"name": "x", "model": {**SCRIPTED, "temperature": 9}}, "temperature"),
    ],
)
async def test_agent_validation_is_422_with_a_useful_message(
    client: httpx.AsyncClient, body: dict[str, Any], fragment: str
) -> None:
    r = await client.post("/api/v1/agents", json=body)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_request"
    assert fragment in r.json()["error"]["message"]


@pytest.mark.anyio
async def test_malformed_json_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/agents", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_request"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"message": ""}, "message:"),
        ({"message": "x" * 40_000}, "message longer than 32000 characters"),
        ({"message": "hi", "stream_options": {"chunk_size": -1}}, "stream_options.chunk_size"),
        ({"message": "hi", "stream_options": {"chunk_size": "big"}}, "stream_options.chunk_size"),
        ({"message": "hi", "stream_options": {"on_disconnect": "explode"}}, "on_disconnect"),
        ({"message": "hi", "user_id": "a#b"}, "user_id"),
        ({"message": "hi", "session_id": ""}, "session_id"),
    ],
)
async def test_chat_validation(client: httpx.AsyncClient, body: dict[str, Any], fragment: str) -> None:
    agent = await _agent(client)
    r = await client.post(f"/api/v1/agents/{agent['id']}/chat/stream", json=body)
    assert r.status_code == 422, r.text
    assert fragment in r.json()["error"]["message"]


@pytest.mark.anyio
async def test_chat_with_an_unknown_agent_is_404_before_any_stream(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/agents/agt_missing/chat/stream", json={"message": "hi"})
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/json"


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["chat/stream", "chat/lumosai/stream"])
async def test_stream_follows_the_contract(client: httpx.AsyncClient, path: str) -> None:
    agent = await _agent(client)
    r = await client.post(f"/api/v1/agents/{agent['id']}/{path}", json={"message": "你好", "user_id": "test"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert r.headers["cache-control"] == "no-cache"
    assert r.headers["x-accel-buffering"] == "no"
    events = _events(r.content)
    ids = [block.split(b"\n")[0] for block in r.content.split(b"\n\n") if block.startswith(b"id:")]
    assert ids == [f"id: {i}".encode() for i in range(len(events))]
    assert events[0] == {
        "chunk_type": "start",
        "message": "Agent started",
        "run_id": r.headers["x-run-id"],
        "agent_id": agent["id"],
        "session_id": "default",
    }
    done = events[-1]
    assert [e["chunk_type"] for e in events].count("done") == 1
    assert done["chunk_type"] == "done"
    assert done["status"] == "completed"
    assert done["final_response"] == "".join(e["content"] for e in events if e["chunk_type"] == "content")
    assert "你好" in done["final_response"]
    assert set(done["usage"]) >= {"input_tokens", "output_tokens"}
    assert set(done["metrics"]) >= {"ttft_ms", "duration_ms"}


@pytest.mark.anyio
async def test_history_is_sent_on_the_next_turn(client: httpx.AsyncClient) -> None:
    agent = await _agent(client, memory={"enabled": True, "history_messages": 2})
    url = f"/api/v1/agents/{agent['id']}/chat"
    first = (await client.post(url, json={"message": "my name is Li", "user_id": "u1"})).json()["data"]
    assert first["memories_updated"] is True
    second = (await client.post(url, json={"message": "again", "user_id": "u1"})).json()["data"]
    # history_messages=2: the model saw exactly the previous exchange (input grows by its words)
    assert second["usage"]["input_tokens"] > first["usage"]["input_tokens"]
    sessions = (await client.get(f"/api/v1/agents/{agent['id']}/sessions", params={"user_id": "u1"})).json()
    assert [(s["session_id"], s["message_count"]) for s in sessions["data"]] == [("default", 4)]

    no_memory = await _agent(client, memory={"enabled": False})
    data = (await client.post(f"/api/v1/agents/{no_memory['id']}/chat", json={"message": "hi"})).json()[
        "data"
    ]
    assert (data["memories_updated"], data["memories_count"]) == (False, 0)


@pytest.mark.anyio
async def test_json_chat_runs_tools(client: httpx.AsyncClient) -> None:
    agent = await _agent(client, tools=["calculator"])
    r = await client.post(f"/api/v1/agents/{agent['id']}/chat", json={"message": "what is 2+3*4?"})
    data = r.json()["data"]
    assert data["content"] == "The result is 14."
    assert data["total_steps"] == 2
    assert [e["chunk_type"] for e in data["tool_events"]] == ["tool_call", "tool_result"]
    assert r.headers["x-run-id"] == data["run_id"]


@pytest.mark.anyio
async def test_upstream_failure_is_an_error_event_then_done(client: httpx.AsyncClient) -> None:
    agent = await _agent(client, model={**SCRIPTED, "options": {"fail_after": 2}})
    r = await client.post(f"/api/v1/agents/{agent['id']}/chat/stream", json={"message": "hi"})
    events = _events(r.content)
    assert [e["chunk_type"] for e in events][-2:] == ["error", "done"]
    assert events[-2]["code"] == "upstream_error"
    assert events[-1]["status"] == "error"
    assert events[-1]["final_response"] == "".join(
        e["content"] for e in events if e["chunk_type"] == "content"
    )
    r = await client.post(f"/api/v1/agents/{agent['id']}/chat", json={"message": "hi"})
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "upstream_error"


@pytest.mark.anyio
async def test_unknown_routes_and_methods_use_the_error_body(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/nothing")
    assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
    r = await client.put("/api/v1/agents")
    assert (r.status_code, r.json()["error"]["code"]) == (405, "method_not_allowed")


@pytest.mark.anyio
async def test_json_chat_maps_a_looping_model_to_502(client: httpx.AsyncClient, app: Any) -> None:
    from agentstream.core.providers.base import ModelRequest, StepEnd, ToolCallRequest

    class Looping:
        async def stream(self, request: ModelRequest) -> Any:
            yield ToolCallRequest("c", "calculator", {"expression": "1+1"})
            yield StepEnd("tool_calls")

    async def factory(name: str, settings: Any) -> Looping:
        return Looping()

    app.state.chat._providers = factory
    agent = await _agent(client, tools=["calculator"])
    r = await client.post(f"/api/v1/agents/{agent['id']}/chat", json={"message": "loop"})
    assert (r.status_code, r.json()["error"]["code"]) == (502, "step_limit_exceeded")
    assert r.json()["data"]["total_steps"] == 8


@pytest.mark.anyio
async def test_the_openapi_document_answers(client: httpx.AsyncClient) -> None:
    r = await client.get("/openapi.json")
    assert r.status_code == 200, r.text
    assert "text/event-stream; charset=utf-8" in str(
        r.json()["paths"]["/api/v1/agents/{agent_id}/chat/stream"]
    )
