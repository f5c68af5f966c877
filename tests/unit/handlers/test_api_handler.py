"""`agentstream.handlers.api`: Mangum, buffered, for HTTP API and `sam local start-api`."""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

import pytest

from agentstream.handlers import api
from tests.conftest import load_event
from tests.unit.handlers.lambda_contexts import PlainContext
from tests.unit.handlers.streaming_test_app import BINARY, app

if TYPE_CHECKING:
    from collections.abc import Callable

    Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


@pytest.fixture
def handler() -> Handler:
    return api.make_handler(app)


def http_api_event(method: str, path: str, body: str | None = None) -> dict[str, Any]:
    data = load_event("http_api_v2.json")
    data.update(rawPath=path, body=body)
    data["requestContext"]["http"].update(method=method, path=path)
    return data


def test_http_api_request_gets_a_buffered_response(handler: Handler) -> None:
    response = handler(http_api_event("POST", "/echo", body='{"a": 1}'), PlainContext())
    assert response["statusCode"] == 200
    assert json.loads(response["body"])["body"] == '{"a": 1}'
    # Invocations in a row reuse the thread's loop.
    assert handler(http_api_event("GET", "/healthz"), PlainContext())["body"] == '{"status":"ok"}'


def test_binary_response_is_base64(handler: Handler) -> None:
    response = handler(http_api_event("GET", "/binary"), PlainContext())
    assert response["isBase64Encoded"] is True
    assert base64.b64decode(response["body"]) == BINARY


def test_module_handler_serves_agentstream_app() -> None:
    response = api.handler(http_api_event("GET", "/healthz"), PlainContext())
    assert (response["statusCode"], response["body"]) == (200, '{"status":"ok"}')
