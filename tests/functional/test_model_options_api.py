"""``model.options`` over HTTP: a 422 in the contract's shape naming the option and the allowed ones."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY

pytestmark = pytest.mark.anyio

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://test", headers=AUTH
    ) as c:
        yield c


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"n": 64}, "'n' is not an option of provider openai"),
        ({"messages": [{"role": "user", "content": "x"}]}, "'messages' is not an option of provider openai"),
        ({"max_tokens": 10_000_000}, "max_tokens must be between 1 and 200000"),
    ],
)
async def test_create_and_patch_refuse_options_that_rewrite_the_request(
    client: httpx.AsyncClient, options: dict[str, Any], named: str
) -> None:
    model = {"provider": "openai", "name": "glm-4-flash", "options": options}
    r = await client.post("/api/v1/agents", json={"name": "a", "model": model})
    assert r.status_code == 422, r.text
    assert set(r.json()) == {"error"}
    assert r.json()["error"]["code"] == "invalid_request"
    assert named in r.json()["error"]["message"]
    assert "allowed: temperature, top_p" in r.json()["error"]["message"] or "between" in named
    r = await client.post("/api/v1/agents", json={"name": "a", "model": {**model, "options": {"top_p": 0.5}}})
    assert r.status_code == 201, r.text
    assert r.json()["data"]["model"]["options"] == {"top_p": 0.5}
    r = await client.patch(f"/api/v1/agents/{r.json()['data']['id']}", json={"model": model})
    assert r.status_code == 422, r.text
    assert named in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": {"name": "m", "max_tokens": True}}, "max_tokens"),
        ({"model": {"name": "m", "max_tokens": "100"}}, "max_tokens"),
        ({"model": {"name": "m", "temperature": "0.5"}}, "temperature"),
        ({"model": {"name": "m"}, "memory": {"enabled": "yes"}}, "enabled"),
        ({"model": {"name": "m"}, "memory": {"history_messages": 1.5}}, "history_messages"),
        ({"model": {"name": "m"}, "name": 7}, "name"),
    ],
)
async def test_agent_fields_take_their_own_types_not_lookalikes(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    # `true` is not a token cap of 1, nor "100" a number: what is stored is what was meant
    r = await client.post("/api/v1/agents", json={"name": "a", **body})
    assert r.status_code == 422, r.text
    assert field in r.json()["error"]["message"]
    ok = await client.post("/api/v1/agents", json={"name": "a", "model": {"name": "m", "temperature": 1}})
    assert ok.status_code == 201, ok.text
    assert ok.json()["data"]["model"]["temperature"] == 1.0
