"""infra/events/ (for `sam local invoke -e ...`) hold events of the two front doors, as Lambda sends them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mangum.handlers import APIGateway, HTTPGateway

EVENTS = Path(__file__).resolve().parents[2] / "infra" / "events"


@pytest.mark.parametrize(
    ("name", "source"),
    [("function-url-healthz.json", HTTPGateway), ("rest-healthz.json", APIGateway)],
)
def test_event_is_read_as_its_front_door(name: str, source: type) -> None:
    event = json.loads((EVENTS / name).read_text(encoding="utf-8"))
    config = {"api_gateway_base_path": "/"}
    assert source.infer(event, {}, config)
    scope = source(event, {}, config).scope
    assert (scope["method"], scope["path"]) == ("GET", "/healthz")
