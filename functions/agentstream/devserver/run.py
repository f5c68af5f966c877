"""The `make run` orchestrator: DynamoDB, the table, a model, the app, a default agent; Ctrl-C stops all.

Options (environment; `make run PORT=8010` passes them through):

  PORT       the app's port on 127.0.0.1 (default 8000)
  PROVIDER   `local` (default: Gemma 3 270M on llama.cpp, built once), `scripted` (no model, starts in
             seconds) or `openai` (the endpoint in OPENAI_BASE_URL; the default when that is set)
  MODEL      the model id for PROVIDER=openai (default: the first one the endpoint lists)
  RESET      `1` deletes the local DynamoDB data first
  DATA_DIR   run state: DynamoDB data, the admin key, logs (default .data)
  CACHE_DIR  what is built or downloaded once: wheels, the model, venvs, jars (default .data)
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

import httpx

from agentstream.devserver.dynamodb import dynamodb_env, local_dynamodb
from agentstream.devserver.llm import LLMUnavailable, local_llm
from agentstream.devserver.procs import DevServerError, Service, port_is_free, stop_all

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

__all__ = [
    "Options",
    "agent_spec",
    "check_port",
    "ensure_agent",
    "load_admin_key",
    "main",
    "run_lock",
]

Provider = Literal["local", "scripted", "openai"]
HOST = "127.0.0.1"
AGENT_INSTRUCTIONS = "You are a helpful assistant. Answer briefly and clearly."
TOOLS = ["calculator", "current_time"]
# Not passed on to the app: this module's own options, and what would send boto3 to a real AWS account.
_VARS_TO_DROP = frozenset({"PORT", "PROVIDER", "MODEL", "RESET", "DATA_DIR", "CACHE_DIR", "AWS_PROFILE",
                           "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"})  # fmt: skip


def say(text: str = "", out: TextIO | None = None) -> None:
    print(text, file=out or sys.stdout, flush=True)


@dataclass(frozen=True)
class Options:
    data_dir: Path
    cache_dir: Path
    port: int = 8000
    provider: Provider = "local"
    model: str | None = None
    reset: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str], cwd: Path) -> Options:
        port_text = env.get("PORT") or "8000"
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise DevServerError(f"PORT={port_text!r} is not a port number (1-65535)")
        provider = (env.get("PROVIDER") or ("openai" if env.get("OPENAI_BASE_URL") else "local")).lower()
        if provider not in ("local", "scripted", "openai"):
            raise DevServerError(f"PROVIDER={provider!r}: use local, scripted or openai")
        if provider == "openai" and not env.get("OPENAI_BASE_URL"):
            raise DevServerError("PROVIDER=openai needs OPENAI_BASE_URL (and usually OPENAI_API_KEY)")
        default_dir = cwd / ".data"
        return cls(
            data_dir=Path(env["DATA_DIR"]).resolve() if env.get("DATA_DIR") else default_dir,
            cache_dir=Path(env["CACHE_DIR"]).resolve() if env.get("CACHE_DIR") else default_dir,
            port=int(port_text),
            provider=provider,  # type: ignore[arg-type]
            model=env.get("MODEL") or None,
            reset=env.get("RESET", "").lower() in ("1", "true", "yes"),
        )


def check_port(port: int) -> None:
    """Fail with a way out when the app's port is taken (and say so if it is agentstream itself)."""
    if port_is_free(HOST, port):
        return
    try:
        ours = httpx.get(f"http://{HOST}:{port}/healthz", timeout=2.0).json() == {"status": "ok"}
    except (httpx.HTTPError, ValueError):
        ours = False
    what = (
        "an agentstream server already runs there (another `make run`?)"
        if ours
        else "another program uses it"
    )
    raise DevServerError(
        f"port {port} on {HOST} is in use: {what}.\n"
        f"  Stop it, or pick another port: make run PORT={port + 10}"
    )


@contextmanager
def run_lock(data_dir: Path) -> Iterator[None]:
    """One `make run` per data folder: two DynamoDB Locals on one database file would corrupt it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "run.lock"
    with path.open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            pid = lock.read().strip() or "?"
            raise DevServerError(
                f"another `make run` (pid {pid}) is using {data_dir}: stop it first (Ctrl-C in its "
                "terminal), or give this one its own DATA_DIR=..."
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        yield


def load_admin_key(env: Mapping[str, str], path: Path) -> tuple[str, str]:
    """The admin key and its source: AGENTSTREAM_ADMIN_KEY, else the file, else a new one saved there."""
    if env.get("AGENTSTREAM_ADMIN_KEY"):
        return env["AGENTSTREAM_ADMIN_KEY"], "from AGENTSTREAM_ADMIN_KEY"
    if path.exists():
        key = path.read_text(encoding="utf-8").strip()
        if key:
            return key, f"saved in {path}"
    path.parent.mkdir(parents=True, exist_ok=True)
    key = "asadm-" + secrets.token_urlsafe(24)
    partial = path.with_suffix(".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(key + "\n")
    partial.replace(path)
    return key, f"new, saved in {path}"


def agent_spec(provider: Provider, model: str) -> dict[str, Any]:
    """The default agent for this run's model (one per provider, so switching PROVIDER keeps both)."""
    name = {"local": "local", "scripted": "scripted", "openai": "remote"}[provider]
    api_provider = "scripted" if provider == "scripted" else "openai"
    # The 270M model rambles: cap its replies.
    settings: dict[str, Any] = {"max_tokens": 256} if provider == "local" else {}
    return {
        "name": name,
        "instructions": AGENT_INSTRUCTIONS,
        "model": {"provider": api_provider, "name": model, **settings},
        "tools": TOOLS,
    }


def _agents(client: httpx.Client) -> Iterator[dict[str, Any]]:
    cursor: str | None = None
    while True:
        params = {"limit": "100", **({"cursor": cursor} if cursor else {})}
        response = client.get("/api/v1/agents", params=params)
        response.raise_for_status()
        body = response.json()
        yield from body["data"]
        cursor = body.get("next_cursor")
        if not cursor:
            return


def ensure_agent(client: httpx.Client, spec: dict[str, Any]) -> str:
    """The id of the agent named ``spec["name"]``: created if missing, its model updated if it differs."""
    for agent in _agents(client):
        if agent.get("name") != spec["name"]:
            continue
        wanted = spec["model"]
        current = agent.get("model") or {}
        if any(current.get(k) != v for k, v in wanted.items()):
            client.patch(f"/api/v1/agents/{agent['id']}", json={"model": wanted}).raise_for_status()
        return str(agent["id"])
    response = client.post("/api/v1/agents", json=spec)
    response.raise_for_status()
    return str(response.json()["data"]["id"])


def _first_model(base_url: str, api_key: str | None) -> str:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(f"{base_url.rstrip('/')}/models", headers=headers, timeout=10.0)
        response.raise_for_status()
        return str(response.json()["data"][0]["id"])
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as e:
        raise DevServerError(
            f"could not list the models at {base_url} ({e}); name one: make run MODEL=..."
        ) from e


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class Orchestrator:
    def __init__(self, options: Options, env: Mapping[str, str]) -> None:
        self.options = options
        self.env = env
        self.services: list[Service] = []
        self.base = f"http://{HOST}:{options.port}"

    def app_env(self, key: str, dynamodb_endpoint: str) -> dict[str, str]:
        env = {k: v for k, v in self.env.items() if k not in _VARS_TO_DROP}
        env.update(dynamodb_env(dynamodb_endpoint))
        env["AGENTSTREAM_ADMIN_KEY"] = key
        # on a laptop, on loopback: the API's document and Swagger UI without a key (a deployed app
        # keeps them behind one unless its operator says otherwise)
        env.setdefault("AGENTSTREAM_PUBLISH_OPENAPI", "true")
        return env

    def start_model(self, env: dict[str, str]) -> tuple[Provider, str, str]:
        """Start or find the model, set the app's OPENAI_* variables; (provider, model, description)."""
        opts = self.options
        if opts.provider == "local":
            say("starting the local model (Gemma 3 270M on llama.cpp) ...")
            try:
                llm = local_llm(opts.cache_dir, opts.data_dir)
            except LLMUnavailable as e:
                return self.fallback(str(e))
            self.services.append(llm.service)
            try:
                llm.start()
            except DevServerError as e:
                stop_all([llm.service])
                return self.fallback(str(e))
            env["OPENAI_BASE_URL"] = llm.base_url
            env["OPENAI_API_KEY"] = "local"  # llama.cpp's server accepts anything
            # its gemma chat format drops system messages: the instructions go into the first user turn
            env.setdefault("OPENAI_FOLD_SYSTEM_PROMPT", "true")
            return "local", llm.model, f"{llm.model} on llama.cpp at {llm.base_url}"
        if opts.provider == "openai":
            base_url = env["OPENAI_BASE_URL"]
            model = opts.model or _first_model(base_url, env.get("OPENAI_API_KEY"))
            return "openai", model, f"{model} at {base_url}"
        return "scripted", "demo", "scripted provider"

    def fallback(self, reason: str) -> tuple[Provider, str, str]:
        say(f"the local model cannot run here: {reason}")
        say("  -> falling back to the scripted provider (canned replies, no model).")
        say("     For a real model fix the above, or use any OpenAI-compatible endpoint:")
        say("     make run OPENAI_BASE_URL=https://.../v1 OPENAI_API_KEY=... MODEL=...")
        return "scripted", "demo", "scripted provider (fallback: no local model)"

    def run(self) -> None:
        opts = self.options
        check_port(opts.port)
        with run_lock(opts.data_dir):
            key, key_source = load_admin_key(self.env, opts.data_dir / "admin-key")
            say("starting a local DynamoDB ...")
            db = local_dynamodb(opts.data_dir, opts.cache_dir, reset=opts.reset)
            self.services.append(db.service)
            db.start()
            env = self.app_env(key, db.endpoint)
            say("creating the table if missing (agentstream init-table) ...")
            self.init_table(env)
            provider, model, model_text = self.start_model(env)
            check_port(opts.port)  # the model's first build can take minutes: check again
            app = Service(
                "app (uvicorn)",
                [sys.executable, "-m", "uvicorn", "agentstream.app:app", "--host", HOST,
                 "--port", str(opts.port), "--timeout-graceful-shutdown", "3"],
                env=env,
            )  # fmt: skip
            self.services.append(app)
            say(f"starting the app on {self.base} ...")
            app.start()
            app.wait_http(f"{self.base}/healthz", timeout=60, ready=lambda r: r.status_code == 200)
            with httpx.Client(
                base_url=self.base, headers={"Authorization": f"Bearer {key}"}, timeout=30
            ) as client:
                spec = agent_spec(provider, model)
                agent_id = ensure_agent(client, spec)
            self.banner(key, key_source, spec["name"], agent_id, model_text, db.description, db.endpoint)
            self.watch()

    def init_table(self, env: dict[str, str]) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "agentstream", "init-table"],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise DevServerError(f"`agentstream init-table` failed:\n{done.stdout}{done.stderr}")

    def banner(
        self, key: str, key_source: str, name: str, agent_id: str, model: str, db: str, db_url: str
    ) -> None:
        body = shlex.quote('{"message": "Hello! What is 2+3*4?", "user_id": "me"}')
        say()
        say("agentstream is running. Ctrl-C stops everything.")
        say()
        say(f"  chat page:  {self.base}/#key={key}&agent={agent_id}")
        say(f"  admin key:  {key}  ({key_source})")
        say(f"  agent:      {name} ({agent_id}): {model}")
        say(f"  DynamoDB:   {db} at {db_url}")
        say(f"  logs:       {self.options.data_dir / 'logs'}")
        say(f"  API docs:   {self.base}/docs")
        say()
        say("  curl -N " + f"{self.base}/api/v1/agents/{agent_id}/chat/stream \\")
        say(f"    -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' -d {body}")
        say()

    def watch(self) -> None:
        while True:
            for service in self.services:
                code = service.exited()
                if code is not None:
                    raise service.failure(f"stopped unexpectedly (exit code {code})")
            time.sleep(0.5)

    def stop(self) -> None:
        running = any(s.exited() is None for s in self.services)
        if running:
            say("stopping ...")
        stop_all(reversed(self.services))
        if running:
            say("stopped.")


def main(env: Mapping[str, str] | None = None, cwd: Path | None = None) -> int:
    env = os.environ if env is None else env
    # Also where a shell started us with SIGINT ignored (background jobs): Ctrl-C and kill must stop all.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    orchestrator: Orchestrator | None = None
    try:
        options = Options.from_env(env, cwd or Path.cwd())
        orchestrator = Orchestrator(options, env)
        orchestrator.run()
    except KeyboardInterrupt:
        return 0
    except DevServerError as e:
        say(f"error: {e}", sys.stderr)
        return 1
    finally:
        if orchestrator is not None:
            # A second Ctrl-C must not cut the clean-up short and leave orphans.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            orchestrator.stop()
    return 0
