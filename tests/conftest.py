"""Shared fixtures. Tests never touch real AWS: credentials are fake and endpoints are unset."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.openai_upstream import FakeOpenAI

EVENTS_DIR = Path(__file__).parent / "events"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fake AWS credentials, no endpoint overrides (moto's mock_aws stops intercepting with them)."""
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    from agentstream.config import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def load_event(name: str) -> dict[str, Any]:
    """A JSON fixture from tests/events/."""
    data: dict[str, Any] = json.loads((EVENTS_DIR / name).read_text(encoding="utf-8"))
    return data


ADMIN_KEY = "test-admin-key"


@pytest.fixture
def dynamodb() -> Iterator[Any]:
    """moto's in-process DynamoDB with the agentstream table created; yields a boto3 client."""
    import boto3
    from moto import mock_aws

    from agentstream.store import create_table

    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_table("agentstream", client)
        yield client


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Settings for tests: a known admin key, quick pings."""
    from agentstream.config import Settings

    monkeypatch.setenv("AGENTSTREAM_ADMIN_KEY", ADMIN_KEY)
    return Settings()


@pytest.fixture
def app(dynamodb: Any, settings: Any) -> Any:
    from agentstream.store import Store
    from agentstream.web.app import create_app

    return create_app(settings, Store(settings.table, dynamodb))


@pytest.fixture
def live_server(app: Any) -> Iterator[str]:
    """The app served by a real uvicorn on 127.0.0.1 (in a thread); yields its base URL."""
    from tests.support.server import serve_in_thread

    with serve_in_thread(app) as url:
        yield url


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A fake OpenAI-compatible upstream on 127.0.0.1, scripted per request (see tests/fakes/)."""
    with FakeOpenAI() as server:
        yield server
