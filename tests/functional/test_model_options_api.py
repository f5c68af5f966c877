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
