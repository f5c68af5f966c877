"""Nothing depends on in-process mocking: the app and the CLI against moto's standalone server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from moto.server import ThreadedMotoServer

from agentstream.cli import main
from tests.conftest import ADMIN_KEY
from tests.support.server import free_port, parse_sse, serve_in_thread


@pytest.fixture
def moto_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", endpoint)
    monkeypatch.setenv("AGENTSTREAM_ADMIN_KEY", ADMIN_KEY)
    monkeypatch.setenv("AGENTSTREAM_TABLE", "standalone")
    try:
        yield endpoint
    finally:
        server.stop()


def test_a_conversation_with_memory_and_tenant_keys_through_the_endpoint(
    moto_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from agentstream.web.app import create_app

    assert main(["init-table"]) == 0
    assert main(["keys", "create", "--tenant", "acme", "--name", "laptop"]) == 0
    tenant_key = capsys.readouterr().out.splitlines()[-1]
    assert tenant_key.startswith("ask_")

    def serve() -> Any:
        return serve_in_thread(create_app())  # a fresh app: a cold start, nothing cached

    headers = {"Authorization": f"Bearer {tenant_key}"}
    model = {"provider": "scripted", "name": "s", "options": {"delay_ms": 0}}
    with serve() as base:
        r = httpx.post(
            f"{base}/api/v1/agents",
            json={"name": "a", "model": model, "tools": ["remember"]},
            headers=headers,
        )
        agent = r.json()["data"]["id"]
        body = {"message": "remember that I like green tea", "user_id": "li"}
        r = httpx.post(f"{base}/api/v1/agents/{agent}/chat/stream", json=body, headers=headers)
        done = parse_sse(r.content)[-1][1]
        assert (done["status"], done["memories_count"]) == ("completed", 1)
    with serve() as base:  # a second cold start finds the same memory and history
        r = httpx.post(
            f"{base}/api/v1/agents/{agent}/chat", json={"message": "hi", "user_id": "li"}, headers=headers
        )
        assert r.json()["data"]["memories_count"] == 1
        r = httpx.get(
            f"{base}/api/v1/agents/{agent}/sessions/default/messages",
            params={"user_id": "li"},
            headers=headers,
        )
        assert [m["role"] for m in r.json()["data"]] == ["user", "assistant"] * 2
        r = httpx.get(f"{base}/api/v1/agents/{agent}", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert r.status_code == 404  # the admin's default tenant is another tenant
