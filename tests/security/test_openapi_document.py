"""The OpenAPI document: behind a key unless published; every route's answers described."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from agentstream.config import Settings
from agentstream.store import Store
from agentstream.web.app import create_app
from tests.conftest import ADMIN_KEY

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test")


@pytest.mark.anyio
async def test_the_document_needs_a_key_and_docs_are_not_served_by_default(app: Any) -> None:
    async with _client(app) as c:
        r = await c.get("/openapi.json")
        assert (r.status_code, r.json()["error"]["code"]) == (401, "unauthorized")
        r = await c.get("/openapi.json", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        r = await c.get("/openapi.json", headers=ADMIN)
        assert r.status_code == 200
        assert "/api/v1/agents" in r.json()["paths"]
        tenant_key = (await c.post("/api/v1/keys", json={"tenant": "acme"}, headers=ADMIN)).json()["data"]
        r = await c.get("/openapi.json", headers={"Authorization": f"Bearer {tenant_key['key']}"})
        assert r.status_code == 200
        for path in ("/docs", "/docs/oauth2-redirect", "/redoc"):
            assert (await c.get(path, headers=ADMIN)).status_code == 404


@pytest.mark.anyio
async def test_publishing_serves_both_without_a_key(
    dynamodb: Any, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    monkeypatch.setenv("AGENTSTREAM_PUBLISH_OPENAPI", "true")
    published = Settings()
    assert published.publish_openapi
    app = create_app(published, Store(published.table, dynamodb))
    async with _client(app) as c:
        r = await c.get("/openapi.json")
        assert r.status_code == 200
        assert "/api/v1/agents" in r.json()["paths"]
        r = await c.get("/docs")
        assert r.status_code == 200
        assert "swagger-ui" in r.text
        assert (await c.get("/api/v1/agents")).status_code == 401  # the routes still need a key


def _operations(app: Any) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, ops in app.openapi()["paths"].items() for method, op in ops.items()]


STREAMS = {
    ("/api/v1/agents/{agent_id}/chat/stream", "post"),
    ("/api/v1/agents/{agent_id}/chat/lumosai/stream", "post"),
    ("/api/v1/agents/{agent_id}/chat/ui", "post"),
    ("/api/v1/agents/{agent_id}/chat/ui/{chat_id}/stream", "get"),
    ("/api/v1/runs/{run_id}/events", "get"),
}


def test_every_answer_has_a_schema_and_every_error_the_contract_shape(app: Any) -> None:
    operations = _operations(app)
    assert len(operations) >= 26
    for path, method, op in operations:
        where = f"{method.upper()} {path}"
        responses = op["responses"]
        if path != "/healthz":
            assert "401" in responses, where
            assert "413" in responses, where
        for status, response in responses.items():
            content = response.get("content", {})
            if status == "204":
                assert not content, where
                continue
            assert content, f"{where} {status} has no content"
            if int(status) >= 400:
                assert list(content) == ["application/json"], f"{where} {status}: {list(content)}"
                schema = content["application/json"]["schema"]
                refs = {s["$ref"].rsplit("/", 1)[-1] for s in schema.get("anyOf", [schema])}
                # a JSON chat whose run failed answers the error and what the run produced (ChatFailure)
                allowed = {"OpenAIErrorBody"} if path.startswith("/v1/") else {"ErrorBody", "ChatFailure"}
                assert refs, where
                assert refs <= allowed, f"{where} {status}: {refs}"
            else:
                for media, body in content.items():
                    assert body.get("schema"), f"{where} {status} {media}: no schema"
        if (path, method) in STREAMS:
            assert list(responses["200"]["content"]) == ["text/event-stream; charset=utf-8"], where
        elif path == "/v1/chat/completions":
            assert set(responses["200"]["content"]) == {
                "application/json",
                "text/event-stream; charset=utf-8",
            }
        elif "200" in responses:
            assert list(responses["200"]["content"]) == ["application/json"], where


def test_no_answer_is_documented_in_fastapis_own_error_shape(app: Any) -> None:
    schemas = app.openapi()["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert "ValidationError" not in schemas


def test_a_failed_chat_carries_the_contract_error(app: Any) -> None:
    schemas = app.openapi()["components"]["schemas"]
    assert schemas["ChatFailure"]["properties"]["error"]["$ref"].endswith("/ErrorDetail")
    assert schemas["ErrorBody"]["properties"]["error"]["$ref"].endswith("/ErrorDetail")
    assert set(schemas["ErrorDetail"]["required"]) == {"code", "message"}
