"""`agentstream.handlers.stream`: one handler, streamed under the layer, buffered everywhere else."""

from __future__ import annotations

from typing import Any

import pytest

from agentstream.config import get_settings
from agentstream.handlers import stream
from tests.conftest import load_event
from tests.unit.handlers.lambda_contexts import PlainContext, StreamingContext
from tests.unit.handlers.streaming_test_app import app


@pytest.fixture
def chat_event() -> dict[str, Any]:
    data = load_event("function_url_v2.json")
    data["rawQueryString"] = "count=2&interval=0"
    return data


def set_env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()


@pytest.mark.parametrize(
    ("env", "context", "expected"),
    [
        ({}, StreamingContext(), "response_stream"),
        ({}, PlainContext(), "buffered"),
        ({"AWS_SAM_LOCAL": "true"}, StreamingContext(), "buffered"),
        ({"AGENTSTREAM_INVOKE_MODE": "buffered"}, StreamingContext(), "buffered"),
        (
            {"AGENTSTREAM_INVOKE_MODE": "response_stream", "AWS_SAM_LOCAL": "true"},
            PlainContext(),
            "response_stream",
        ),
    ],
)
def test_invoke_mode(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], context: object, expected: str
) -> None:
    set_env(monkeypatch, **env)
    assert stream.invoke_mode(context) == expected


def test_plain_call_returns_the_whole_body(chat_event: dict[str, Any]) -> None:
    response = stream.make_handler(app)(chat_event, PlainContext())
    assert isinstance(response, dict)
    assert response["statusCode"] == 200
    assert response["headers"]["content-type"] == "text/event-stream; charset=utf-8"
    assert response["body"].count("data: ") == 4
    assert '"chunk_type": "done"' in response["body"]


def test_sam_local_gets_a_buffered_answer_even_under_the_layer(
    monkeypatch: pytest.MonkeyPatch, chat_event: dict[str, Any]
) -> None:
    set_env(monkeypatch, AWS_SAM_LOCAL="true")
    response = stream.make_handler(app)(chat_event, StreamingContext())
    assert isinstance(response, dict)
    assert response["statusCode"] == 200


@pytest.mark.anyio
async def test_under_the_layer_it_returns_the_stream(chat_event: dict[str, Any]) -> None:
    response = stream.make_handler(app)(chat_event, StreamingContext())
    assert not isinstance(response, dict)
    items = [item async for item in response]
    assert isinstance(items[0], dict)
    assert items[0]["statusCode"] == 200
    assert all(isinstance(item, bytes) for item in items[1:])
    assert len(items) == 1 + 4


def test_module_handler_serves_agentstream_app() -> None:
    healthz = load_event("function_url_v2.json")
    healthz.update(rawPath="/healthz", rawQueryString="", body=None)
    healthz["requestContext"]["http"].update(method="GET", path="/healthz")
    response = stream.handler(healthz, PlainContext())
    assert isinstance(response, dict)
    assert (response["statusCode"], response["body"]) == (200, '{"status":"ok"}')
