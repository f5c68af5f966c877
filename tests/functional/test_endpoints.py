"""Named endpoints: operators register them (AGENTSTREAM_ENDPOINTS), agents only name them.

Through the HTTP API (an agent carrying a URL or a key, or naming an unknown endpoint, is a 422) and
the provider registry (the endpoint's URL, and its key from the environment or Secrets Manager).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import boto3
import httpx
import pytest
from moto import mock_aws

from agentstream.config import Settings
from agentstream.core.providers import create_provider
from agentstream.core.providers._retry import Retrying
from agentstream.core.providers.anthropic import AnthropicProvider
from agentstream.core.providers.openai import OpenAIProvider
from agentstream.errors import BadRequest
from tests.conftest import ADMIN_KEY

pytestmark = pytest.mark.anyio

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
ENDPOINTS = {
    "glm": {
        "provider": "openai",
        "base_url": "https://open.bigmodel.cn/api/paas/v4",
        "api_key_env": "GLM_KEY",
    },
    "vllm": {"provider": "openai", "base_url": "http://10.0.0.5:8000/v1"},
    "claude-proxy": {"provider": "anthropic", "base_url": "https://llm.example.com/anthropic"},
}


@pytest.fixture
def endpoints(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("AGENTSTREAM_ENDPOINTS", json.dumps(ENDPOINTS))
    monkeypatch.setenv("GLM_KEY", "glm-secret-key")
    from agentstream.config import get_settings

    get_settings.cache_clear()
    return ENDPOINTS


@pytest.fixture
async def client(endpoints: dict[str, Any], app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=AUTH) as c:
        yield c


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ({"provider": "openai", "endpoint": "glm", "name": "glm-4-flash"}, "openai"),
        ({"endpoint": "claude-proxy", "name": "claude-sonnet"}, "anthropic"),  # the endpoint tells
    ],
)
async def test_an_agent_names_a_configured_endpoint(
    client: httpx.AsyncClient, model: dict[str, Any], provider: str
) -> None:
    r = await client.post("/api/v1/agents", json={"name": "a", "model": model})
    assert r.status_code == 201, r.text
    stored = (await client.get(f"/api/v1/agents/{r.json()['data']['id']}")).json()["data"]["model"]
    assert (stored["provider"], stored["endpoint"]) == (provider, model["endpoint"])


REFUSED = [
    ({"provider": "openai", "name": "m", "endpoint": "nope"}, "unknown endpoint 'nope'; configured: "),
    (
        {"provider": "anthropic", "name": "m", "endpoint": "glm"},
        "endpoint 'glm' speaks openai, not anthropic",
    ),
    ({"provider": "bedrock", "name": "m", "endpoint": "glm"}, "provider 'bedrock' has no named endpoints"),
    ({"provider": "openai", "name": "m", "base_url": "http://169.254.169.254/"}, "base_url: an agent cannot"),
    ({"provider": "openai", "name": "m", "api_key": "sk-1"}, "api_key: an agent cannot carry a URL or key"),
    ({"provider": "openai", "name": "m", "options": {"base_url": "http://x"}}, "base_url: an agent cannot"),
    ({"provider": "openai", "name": "m", "endpoint": "http://evil.example"}, "model.endpoint"),
]


async def test_urls_keys_and_unknown_endpoints_are_refused(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/api/v1/agents", json={"name": "b", "model": {"provider": "scripted", "name": "s"}}
    )
    for model, fragment in REFUSED:
        r = await client.post("/api/v1/agents", json={"name": "a", "model": model})
        assert r.status_code == 422, (model, r.text)
        assert r.json()["error"]["code"] == "invalid_request"
        assert fragment in r.json()["error"]["message"], model
        patched = await client.patch(f"/api/v1/agents/{created.json()['data']['id']}", json={"model": model})
        assert patched.status_code == 422, (model, patched.text)


async def test_an_agent_whose_endpoint_was_removed_still_reads(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = await client.post("/api/v1/agents", json={"name": "a", "model": {"endpoint": "vllm", "name": "m"}})
    monkeypatch.setenv("AGENTSTREAM_ENDPOINTS", "{}")
    from agentstream.config import get_settings

    get_settings.cache_clear()
    again = await client.get(f"/api/v1/agents/{r.json()['data']['id']}")
    assert again.status_code == 200
    assert again.json()["data"]["model"]["endpoint"] == "vllm"


class _Model:
    def __init__(self, provider: str, endpoint: str | None) -> None:
        self.provider = provider
        self.endpoint = endpoint


async def test_the_registry_builds_the_endpoints_provider_with_its_key(endpoints: dict[str, Any]) -> None:
    settings = Settings()
    glm = await create_provider(_Model("openai", "glm"), settings)
    assert isinstance(glm, Retrying)
    assert isinstance(glm.inner, OpenAIProvider)
    assert glm.inner._url == "https://open.bigmodel.cn/api/paas/v4/chat/completions"
    assert glm.inner._api_key == "glm-secret-key"
    vllm = await create_provider(_Model("openai", "vllm"), settings)
    assert isinstance(vllm, Retrying)
    assert isinstance(vllm.inner, OpenAIProvider)
    assert vllm.inner._api_key is None
    proxy = await create_provider(_Model("anthropic", "claude-proxy"), settings)
    assert isinstance(proxy, Retrying)
    assert isinstance(proxy.inner, AnthropicProvider)
    assert proxy.inner._url == "https://llm.example.com/anthropic/v1/messages"


async def test_an_endpoint_the_configuration_no_longer_has_fails_the_run_clearly(
    endpoints: dict[str, Any],
) -> None:
    with pytest.raises(BadRequest, match="endpoint 'gone' is not configured"):
        await create_provider(_Model("openai", "gone"), Settings())


@pytest.fixture
def secrets() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="us-east-1")


async def test_an_endpoint_key_can_come_from_secrets_manager(
    secrets: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    arn = secrets.create_secret(Name="deepseek-key", SecretString="ds-secret")["ARN"]
    endpoint = {"provider": "openai", "base_url": "https://api.deepseek.com/v1", "api_key_secret_arn": arn}
    monkeypatch.setenv("AGENTSTREAM_ENDPOINTS", json.dumps({"deepseek": endpoint}))
    provider = await create_provider(_Model("openai", "deepseek"), Settings())
    assert isinstance(provider, Retrying)
    assert isinstance(provider.inner, OpenAIProvider)
    assert provider.inner._api_key == "ds-secret"
    assert "ds-secret" not in repr(Settings())


@pytest.mark.parametrize(
    ("endpoints", "fragment"),
    [
        (
            {"x": {"provider": "openai", "base_url": "https://h", "api_key_env": "NOT_SET_ANYWHERE"}},
            "takes its key from NOT_SET_ANYWHERE, which is not set",
        ),
        ({"x": {"provider": "bedrock", "base_url": "https://h.example"}}, "provider"),
        ({"x": {"provider": "openai", "base_url": "file:///etc/passwd"}}, "must start with https://"),
        ({"x": {"provider": "openai", "base_url": "https://h.example", "api_key": "sk-inline"}}, "api_key"),
        ({"x y": {"provider": "openai", "base_url": "https://h.example"}}, "endpoint names"),
    ],
)
def test_a_bad_endpoint_configuration_stops_the_start(
    monkeypatch: pytest.MonkeyPatch, endpoints: dict[str, Any], fragment: str
) -> None:
    monkeypatch.setenv("AGENTSTREAM_ENDPOINTS", json.dumps(endpoints))
    with pytest.raises(ValueError, match=fragment):
        Settings()
