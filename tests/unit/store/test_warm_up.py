"""Start-up warm-up: every operation a chat makes is prepared without touching the network."""

from __future__ import annotations

import time

import pytest

from agentstream.store import Store


def test_dry_run_calls_need_no_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:1")  # nothing listens there
    store = Store("agentstream")
    started = time.monotonic()
    store.connect()  # would raise EndpointConnectionError if any call went out
    assert time.monotonic() - started < 5
    with pytest.raises(Exception, match="Could not connect"):  # the stub is gone afterwards
        store.connect(dry_run_calls=False, open_connection=True)
