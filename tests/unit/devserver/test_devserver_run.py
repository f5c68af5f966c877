"""`make run` decisions: options, the port check, the admin key, the run lock, the default agent."""

from __future__ import annotations

import json
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from agentstream.devserver import run
from agentstream.devserver.llm import LLMUnavailable
from agentstream.devserver.procs import DevServerError
from agentstream.devserver.run import (
    Options,
    Orchestrator,
    agent_spec,
    check_port,
    ensure_agent,
    load_admin_key,
    run_lock,
)

if TYPE_CHECKING:
    from pathlib import Path

# ---- options --------------------------------------------------------------------------------------


def test_defaults_run_the_local_model_on_8000(tmp_path: Path) -> None:
    options = Options.from_env({}, tmp_path)
    assert options == Options(data_dir=tmp_path / ".data", cache_dir=tmp_path / ".data")
    assert options.port == 8000
    assert options.provider == "local"
    assert not options.reset


def test_an_openai_base_url_replaces_the_local_model(tmp_path: Path) -> None:
    options = Options.from_env({"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "MODEL": "glm-4-flash"}, tmp_path)
    assert options.provider == "openai"
    assert options.model == "glm-4-flash"


def test_make_variables_set_provider_port_reset_and_folders(tmp_path: Path) -> None:
    env = {"PROVIDER": "scripted", "PORT": "8010", "RESET": "1", "DATA_DIR": str(tmp_path / "d")}
    options = Options.from_env(env, tmp_path)
    assert (options.provider, options.port, options.reset) == ("scripted", 8010, True)
    assert options.data_dir == tmp_path / "d"
    assert options.cache_dir == tmp_path / ".data"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "eighty"}, "not a port number"),
        ({"PORT": "70000"}, "not a port number"),
        ({"PROVIDER": "gpt"}, "use local, scripted or openai"),
        ({"PROVIDER": "openai"}, "needs OPENAI_BASE_URL"),
    ],
)
def test_bad_options_say_what_to_use(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(DevServerError, match=message):
        Options.from_env(env, tmp_path)


# ---- the app's port ------------------------------------------------------------------------------------


class _Healthz(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"status": "ok"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_port_in_use_by_another_program_suggests_another_port() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(DevServerError, match=rf"port {port} .* another program uses it") as caught:
            check_port(port)
    assert f"make run PORT={port + 10}" in str(caught.value)


def test_port_in_use_by_agentstream_says_so() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Healthz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(DevServerError, match=r"an agentstream server already runs there"):
            check_port(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def test_free_port_passes() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    check_port(port)


# ---- admin key and lock ----------------------------------------------------------------------------------


def test_admin_key_is_generated_once_and_kept_private(tmp_path: Path) -> None:
    path = tmp_path / "data" / "admin-key"
    key, source = load_admin_key({}, path)
    assert len(key) >= 30
    assert source.startswith("new")
    assert path.stat().st_mode & 0o777 == 0o600
    again, source = load_admin_key({}, path)
    assert again == key
    assert source == f"saved in {path}"


def test_admin_key_from_the_environment_wins_and_is_not_written(tmp_path: Path) -> None:
    path = tmp_path / "admin-key"
    key, source = load_admin_key({"AGENTSTREAM_ADMIN_KEY": "mine"}, path)
    assert (key, source) == ("mine", "from AGENTSTREAM_ADMIN_KEY")
    assert not path.exists()


def test_an_empty_key_file_gets_a_new_key(tmp_path: Path) -> None:
    path = tmp_path / "admin-key"
    path.write_text("\n")
    key, _ = load_admin_key({}, path)
    assert key
    assert path.read_text().strip() == key


def test_a_second_run_on_the_same_data_is_refused(tmp_path: Path) -> None:
    with run_lock(tmp_path):
        assert (tmp_path / "run.lock").read_text() == str(os.getpid())
        with (
            pytest.raises(DevServerError, match=rf"another `make run` \(pid {os.getpid()}\)"),
            run_lock(tmp_path),
        ):
            pass
    with run_lock(tmp_path):  # released after the first run
        pass


# ---- the default agent ------------------------------------------------------------------------------------


def test_agent_spec_points_at_the_right_provider() -> None:
    local = agent_spec("local", "gemma-3-270m")
    assert local["name"] == "local"
    assert local["model"]["provider"] == "openai"
    assert local["model"]["name"] == "gemma-3-270m"
    assert local["model"]["max_tokens"] > 0
    assert local["tools"] == ["calculator", "current_time"]
    scripted = agent_spec("scripted", "demo")
    assert scripted["model"] == {"provider": "scripted", "name": "demo"}
    assert agent_spec("openai", "glm-4-flash")["name"] == "remote"


class FakeApi:
    """The agents routes of the contract, in memory, behind httpx.MockTransport."""

    def __init__(self, agents: list[dict[str, Any]], page_size: int = 100) -> None:
        self.agents = agents
        self.page_size = page_size
        self.calls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(f"{request.method} {request.url.path}")
        assert request.headers["authorization"] == "Bearer k"
        if request.method == "GET":
            start = int(request.url.params.get("cursor", "0"))
            end = start + self.page_size
            cursor = str(end) if end < len(self.agents) else None
            return httpx.Response(200, json={"data": self.agents[start:end], "next_cursor": cursor})
        if request.method == "POST":
            agent = {**json.loads(request.content), "id": f"agt_{len(self.agents)}"}
            self.agents.append(agent)
            return httpx.Response(201, json={"data": agent})
        if request.method == "PATCH":
            agent = next(a for a in self.agents if request.url.path.endswith(a["id"]))
            agent.update(json.loads(request.content))
            return httpx.Response(200, json={"data": agent})
        return httpx.Response(405)

    def client(self) -> httpx.Client:
        return httpx.Client(
            transport=httpx.MockTransport(self), base_url="http://app", headers={"Authorization": "Bearer k"}
        )


def test_seeds_the_agent_when_none_exists() -> None:
    api = FakeApi([])
    with api.client() as client:
        agent_id = ensure_agent(client, agent_spec("local", "gemma-3-270m"))
    assert api.calls == ["GET /api/v1/agents", "POST /api/v1/agents"]
    assert api.agents[0]["id"] == agent_id
    assert api.agents[0]["name"] == "local"


def test_an_existing_agent_is_reused_untouched() -> None:
    spec = agent_spec("scripted", "demo")
    api = FakeApi([{"id": "agt_x", "name": "mine", "model": {"provider": "openai", "name": "m"}},
                   {**spec, "id": "agt_s"}])  # fmt: skip
    with api.client() as client:
        assert ensure_agent(client, spec) == "agt_s"
    assert api.calls == ["GET /api/v1/agents"]


def test_an_existing_agent_with_another_model_is_updated() -> None:
    spec = agent_spec("local", "gemma-3-270m")
    old = {**spec, "id": "agt_l", "model": {"provider": "openai", "name": "old-model"}}
    api = FakeApi([old])
    with api.client() as client:
        assert ensure_agent(client, spec) == "agt_l"
    assert api.calls == ["GET /api/v1/agents", "PATCH /api/v1/agents/agt_l"]
    assert api.agents[0]["model"] == spec["model"]


def test_the_agent_is_found_on_a_later_page() -> None:
    spec = agent_spec("scripted", "demo")
    others = [{"id": f"agt_{i}", "name": f"other{i}", "model": {}} for i in range(3)]
    api = FakeApi([*others, {**spec, "id": "agt_s"}], page_size=2)
    with api.client() as client:
        assert ensure_agent(client, spec) == "agt_s"
    assert api.calls == ["GET /api/v1/agents", "GET /api/v1/agents"]


# ---- model fallback ---------------------------------------------------------------------------------------


def test_an_unbuildable_local_model_falls_back_to_scripted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_compiler(cache_dir: Path, data_dir: Path) -> None:
        raise LLMUnavailable(
            "no C/C++ compiler to build llama-cpp-python (apt-get install -y build-essential)"
        )

    monkeypatch.setattr(run, "local_llm", no_compiler)
    orchestrator = Orchestrator(Options.from_env({}, tmp_path), {})
    env: dict[str, str] = {}
    provider, model, _ = orchestrator.start_model(env)
    assert (provider, model) == ("scripted", "demo")
    assert "OPENAI_BASE_URL" not in env
    out = capsys.readouterr().out
    assert "build-essential" in out
    assert "falling back to the scripted provider" in out
    assert "OPENAI_BASE_URL=" in out


def test_an_openai_endpoint_skips_the_local_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_run(cache_dir: Path, data_dir: Path) -> None:
        raise AssertionError("the local model must not start")

    monkeypatch.setattr(run, "local_llm", must_not_run)
    env = {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "MODEL": "glm-4-flash"}
    orchestrator = Orchestrator(Options.from_env(env, tmp_path), env)
    provider, model, text = orchestrator.start_model(dict(env))
    assert (provider, model) == ("openai", "glm-4-flash")
    assert "http://127.0.0.1:9/v1" in text


def test_an_unreachable_endpoint_without_model_asks_for_one(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1"}
    orchestrator = Orchestrator(Options.from_env(env, tmp_path), env)
    with pytest.raises(DevServerError, match=r"make run MODEL="):
        orchestrator.start_model(dict(env))


def test_the_app_gets_local_aws_settings_and_none_of_the_run_options(tmp_path: Path) -> None:
    env = {
        "PORT": "8010",
        "PROVIDER": "scripted",
        "AWS_PROFILE": "prod",
        "AWS_ENDPOINT_URL": "https://x",
        "HOME": "/h",
    }
    orchestrator = Orchestrator(Options.from_env(env, tmp_path), env)
    app_env = orchestrator.app_env("key", "http://127.0.0.1:5555")
    assert app_env["AWS_ENDPOINT_URL_DYNAMODB"] == "http://127.0.0.1:5555"
    assert app_env["AGENTSTREAM_ADMIN_KEY"] == "key"
    assert app_env["AGENTSTREAM_PUBLISH_OPENAPI"] == "true"
    assert app_env["HOME"] == "/h"
    for gone in ("PORT", "PROVIDER", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        assert gone not in app_env
