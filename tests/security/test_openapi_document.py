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
