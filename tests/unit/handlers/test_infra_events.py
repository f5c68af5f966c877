"""The ready-made events in infra/events/ (for `sam local invoke`) go through both handlers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agentstream.handlers import api, stream
from tests.unit.handlers.lambda_contexts import PlainContext, StreamingContext
from tests.unit.handlers.streaming_test_app import app

EVENTS = sorted((Path(__file__).resolve().parents[3] / "infra" / "events").glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def test_the_three_events_are_there() -> None:
    assert [path.name for path in EVENTS] == [
        "function-url-chat-stream.json",
        "healthz.json",
        "rest-chat-stream.json",
    ]


@pytest.mark.parametrize("path", EVENTS, ids=lambda path: path.stem)
def test_sam_local_invoke_gets_the_whole_body(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    monkeypatch.setenv("AWS_SAM_LOCAL", "true")
    response = stream.make_handler(app)(load(path), PlainContext())
    assert isinstance(response, dict)
    assert response["statusCode"] == 200
    if "chat" in path.stem:
        assert response["body"].startswith("id: 0\ndata: ")
        assert '"chunk_type": "done"' in response["body"]
    else:
        assert json.loads(response["body"]) == {"status": "ok"}


@pytest.mark.parametrize("path", EVENTS, ids=lambda path: path.stem)
def test_buffered_api_handler_answers_them(path: Path) -> None:
    assert api.make_handler(app)(load(path), PlainContext())["statusCode"] == 200


@pytest.mark.anyio
@pytest.mark.parametrize("path", EVENTS, ids=lambda path: path.stem)
async def test_they_stream_under_the_layer(path: Path) -> None:
    response = stream.make_handler(app)(load(path), StreamingContext())
    assert not isinstance(response, dict)
    items = [item async for item in response]
    assert isinstance(items[0], dict)
    assert items[0]["statusCode"] == 200
    assert ("multiValueHeaders" in items[0]) == path.stem.startswith("rest")
    assert b"".join(item for item in items[1:] if isinstance(item, bytes))
