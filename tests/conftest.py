"""Shared fixtures. Tests never touch real AWS: credentials are fake and endpoints are unset."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.openai_upstream import FakeOpenAI

EVENTS_DIR = Path(__file__).parent / "events"
ADMIN_KEY = "test-admin-key"

# Secrets that must never reach a log line, anywhere in the suite: the admin key, the provider key most
# tests configure, and any tenant key the tests issue (tests/functional/test_leak_scan.py scans one run
# for many more kinds, and responses and stored items too).
_LOGGED_SECRETS = re.compile(re.escape(ADMIN_KEY) + r"|sk-test|ask_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")


class _LeakWatch(logging.Handler):
    """Sees every record of this process that its logger lets through: warnings and errors (where a
    leak is likeliest: failures quoting what failed), and whatever a test turns up to INFO or DEBUG."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.leaks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a record whose arguments do not fit its format: look at both
            text = f"{record.msg} {record.args}"
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        extras = {k: v for k, v in record.__dict__.items() if k not in _PLAIN_RECORD}
        text += repr(extras)
        if match := _LOGGED_SECRETS.search(text):
            self.leaks.append(f"{record.name} ({record.levelname}): {match.group()!r} in {text[:300]!r}")


_PLAIN_RECORD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


@pytest.fixture(scope="session", autouse=True)
def _no_secret_in_any_log() -> Iterator[None]:
    """Fails the run if any test made the app (or a library) log a key."""
    root = logging.getLogger()
    watch = _LeakWatch()
    root.addHandler(watch)
    yield
    root.removeHandler(watch)
    assert not watch.leaks, "secrets in log lines:\n" + "\n".join(watch.leaks[:20])


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
