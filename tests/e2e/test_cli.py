"""The ``agentstream`` command against a running server."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from agentstream.cli import main
from tests.conftest import ADMIN_KEY


def test_agents_create_list_and_chat_stream_to_the_terminal(
    live_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    remote = ["--url", live_server, "--key", ADMIN_KEY]
    assert (
        main(
            [
                "agents",
                "create",
                "--name",
                "cli",
                "--provider",
                "scripted",
                "--model",
                "s",
                "--tool",
                "calculator",
                *remote,
            ]
        )
        == 0
    )
    agent_id = capsys.readouterr().out.strip()
    assert agent_id.startswith("agt_")
    assert main(["agents", "list", *remote]) == 0
    assert agent_id in capsys.readouterr().out

    assert main(["chat", agent_id, "what is 6*7?", *remote]) == 0
    captured = capsys.readouterr()
    assert captured.out == "The result is 42.\n"
    assert '[tool] calculator({"expression": "6*7"})' in captured.err
    assert "[tool] calculator -> 42" in captured.err
    assert "-- completed | TTFT" in captured.err


def test_chat_reports_http_errors_plainly(live_server: str) -> None:
    with pytest.raises(SystemExit, match="HTTP 404: agent agt_nope not found"):
        main(["chat", "agt_nope", "hi", "--url", live_server, "--key", ADMIN_KEY])
    with pytest.raises(SystemExit, match="HTTP 401"):
        main(["chat", "agt_nope", "hi", "--url", live_server, "--key", "wrong"])


def test_chat_without_a_key_says_how_to_give_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTSTREAM_KEY", raising=False)
    monkeypatch.delenv("AGENTSTREAM_ADMIN_KEY", raising=False)
    with pytest.raises(SystemExit, match="no API key"):
        main(["chat", "a", "hi"])


def test_serve_refuses_a_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    assert f"port {port} on 127.0.0.1 is in use" in capsys.readouterr().err


def test_init_table_is_idempotent(dynamodb: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init-table", "--table", "fresh"]) == 0
    assert main(["init-table", "--table", "fresh"]) == 0
    assert capsys.readouterr().out.splitlines() == ["table fresh created", "table fresh already exists"]
