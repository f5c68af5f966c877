"""Every process the bench measures or needs, each on its own: started, checked, and always stopped.

- DynamoDB Local (Java; ``agentstream.devserver.dynamodb`` finds or installs it, as ``make run`` does);
- the recording proxy in front of it (``bench.dynamo_proxy``);
- the fake model (``bench.upstream``);
- ours: ``uvicorn agentstream.app:app``, one talking to DynamoDB directly, one through the proxy;
- the baselines: ``uvicorn bench.floor_app:app``;
- Lambda runtimes (the streaming-runtime layer's ``bootstrap``), started by the Lambda figures.

The app is used black-box: whatever ``agentstream`` the interpreter imports, over HTTP, configured by
its environment variables only. Each child leads its own process group and gets SIGTERM if the bench
dies; `Stack.close` stops every group (SIGTERM, then SIGKILL), on success, failure and Ctrl-C alike.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from agentstream.devserver.dynamodb import dynamodb_env, local_dynamodb
from agentstream.devserver.procs import Service, free_port, stop_all, tail

__all__ = ["ADMIN_KEY", "ROOT", "Stack", "cpu_seconds"]

ROOT = Path(__file__).resolve().parents[1]
ADMIN_KEY = "bench-admin-key"
TABLE = "agentstream-bench"
_CLK_TCK = os.sysconf("SC_CLK_TCK")
# What the parent's environment must not pass on: it would point the app at real AWS or change it.
_DROP_PREFIXES = ("AWS_", "AGENTSTREAM_", "OPENAI_", "SSE_")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) from /proc/<pid>/stat, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


class Stack:
    def __init__(self, workdir: Path, cache_dir: Path) -> None:
        self.workdir = workdir
        self.cache_dir = cache_dir
        self.logs = workdir / "logs"
        self.services: list[Service] = []
        self.store_description = ""
        self.dynamodb = self.proxy = self.upstream = ""
        self.ours = self.ours_proxied = self.floor = ""
        self.servers: dict[str, Service] = {}

    # --- processes --------------------------------------------------------------------------------

    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_DROP_PREFIXES)}
        # The bench's own modules (and tests/fakes) come from the checkout; agentstream from wherever
        # the interpreter finds it (installed, or an existing PYTHONPATH that goes first).
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join([*paths, str(ROOT)])
        env["PYTHONDONTWRITEBYTECODE"] = "0"
        return env

    def app_env(self, dynamodb: str, **extra: str) -> dict[str, str]:
        return {
            **self.base_env(),
            **dynamodb_env(dynamodb),
            "AGENTSTREAM_TABLE": TABLE,
            "AGENTSTREAM_ADMIN_KEY": ADMIN_KEY,
            "OPENAI_BASE_URL": f"{self.upstream}/v1",
            "OPENAI_API_KEY": "bench",
            # the per-tenant limits stay on (their store writes are part of every start) but out of
            # reach: the bench sends every stream as one tenant, many at once
            "AGENTSTREAM_RATE_LIMIT_PER_MINUTE": "1000000",
            "AGENTSTREAM_MAX_CONCURRENT_RUNS": "1000",
            **extra,
        }

    def spawn(self, name: str, args: list[str], env: dict[str, str], *, cwd: Path | None = None) -> Service:
        service = Service(name, args, log=self.logs / f"{name}.log", env=env, cwd=cwd or ROOT)
        self.services.append(service)
        service.start()
        return service

    def uvicorn(self, name: str, app: str, env: dict[str, str]) -> tuple[Service, str]:
        port = free_port()
        args = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
        args += ["--log-level", "warning", "--no-access-log"]
        return self.spawn(name, args, env), f"http://127.0.0.1:{port}"

    def stop(self, service: Service) -> None:
        stop_all([service])
        with contextlib.suppress(ValueError):
            self.services.remove(service)

    def close(self) -> None:
        stop_all(self.services)
        self.services.clear()

    # --- the whole stack ---------------------------------------------------------------------------

    def start(self) -> None:
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.logs.mkdir(parents=True)
        db = local_dynamodb(self.workdir, self.cache_dir, reset=True)
        self.store_description = db.description
        self.services.append(db.service)
        db.start()
        self.dynamodb = db.endpoint

        up_port, proxy_port = free_port(), free_port()
        base = self.base_env()
        upstream = self.spawn(
            "upstream", [sys.executable, "-m", "bench.upstream", "--port", str(up_port)], base
        )
        proxy_args = [sys.executable, "-m", "bench.dynamo_proxy", "--port", str(proxy_port)]
        proxy = self.spawn("dynamo-proxy", [*proxy_args, "--target", self.dynamodb], base)
        self.upstream, self.proxy = f"http://127.0.0.1:{up_port}", f"http://127.0.0.1:{proxy_port}"
        upstream.wait_http(f"{self.upstream}/healthz", timeout=30)
        proxy.wait_http(f"{self.proxy}/_bench/log", timeout=30)

        init = subprocess.run(
            [sys.executable, "-m", "agentstream", "init-table"],
            env=self.app_env(self.dynamodb),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if init.returncode != 0:
            raise RuntimeError(f"agentstream init-table failed:\n{init.stdout}{init.stderr}")

        starting = {
            "ours": self.uvicorn("ours", "agentstream.app:app", self.app_env(self.dynamodb)),
            "ours-proxied": self.uvicorn("ours-proxied", "agentstream.app:app", self.app_env(self.proxy)),
            "floor": self.uvicorn("floor", "bench.floor_app:app", self.app_env(self.dynamodb)),
        }
        for name, (service, url) in starting.items():
            service.wait_http(f"{url}/healthz", timeout=60, ready=lambda r: r.status_code == 200)
            self.servers[name] = service
        self.ours, self.ours_proxied, self.floor = (starting[n][1] for n in ("ours", "ours-proxied", "floor"))

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- helpers -----------------------------------------------------------------------------------

    def create_agent(self, body: dict[str, Any]) -> str:
        r = httpx.post(
            f"{self.ours}/api/v1/agents",
            json=body,
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            timeout=30,
        )
        if r.status_code != 201:
            raise RuntimeError(f"creating agent {body['name']!r}: HTTP {r.status_code} {r.text[:300]}")
        agent_id: str = r.json()["data"]["id"]
        return agent_id

    def control(self, base: str, what: str) -> Any:
        """The upstream's or the proxy's records (``what`` = requests, log) or clear them (clear)."""
        method = "POST" if what == "clear" else "GET"
        return httpx.request(method, f"{base}/_bench/{what}", timeout=30).json()

    def cpu(self, name: str) -> float:
        return cpu_seconds(self.servers[name].pid)

    def check_alive(self) -> None:
        for service in self.services:
            code = service.exited()
            if code is not None:
                log = tail(service.log) if service.log is not None else ""
                raise RuntimeError(f"{service.name} exited with code {code}; log:\n{log}")


def settle(seconds: float = 0.3) -> None:
    """Let background work (run-log batches, connection closes) finish before reading CPU."""
    time.sleep(seconds)
