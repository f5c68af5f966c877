"""Several agentstream instances sharing one DynamoDB: black-box tests of what crosses instances.

- `MotoServer`: moto's standalone server in a thread of the test process, on a port of its own, serving
  one request at a time (moto's backends are not thread-safe, and several instances write at once).
- `Cluster`: the moto server with the table created, and app instances started on demand, each a
  ``python -m uvicorn tests.support.instance_app:app`` subprocess on a socket the test process bound
  (no port race), configured only through environment variables; each logs to a file.
- `open_sse`: an SSE reader that timestamps events and survives what the tests do to the server (a read
  timeout, a killed instance), recording how the stream ended instead of raising.

Tests talk to instances over HTTP and look at the table only through item shapes: pk
``T#{tenant}#R#{run_id}``, sk ``RUN`` for the run record, sk prefix ``EV#`` for the run log.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.server import SSEEvent, SSEStream, consume_sse

__all__ = [
    "Cluster",
    "Instance",
    "MotoServer",
    "Stream",
    "content_of",
    "open_sse",
    "running_cluster",
    "wait_until",
]

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
TENANT = "default"  # the admin key's tenant
FAKE_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def wait_until(
    probe: Callable[[], Any], *, timeout: float, interval: float = 0.05, what: str = "condition"
) -> Any:
    """Poll ``probe`` until it returns something truthy; return it. Fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout} s (last: {value!r})")
        time.sleep(interval)


class MotoServer:
    """moto's DynamoDB (and the rest) over HTTP on 127.0.0.1, requests handled one at a time."""

    def __init__(self) -> None:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        class QuietHandler(MotoRequestHandler):
            def log_request(self, *args: Any, **kwargs: Any) -> None:
                pass

        app = DomainDispatcherApplication(create_backend_app)
        lock = threading.Lock()

        def serialized(environ: Any, start_response: Any) -> list[bytes]:
            with lock:
                result = app(environ, start_response)
                try:
                    return list(result)
                finally:
                    close = getattr(result, "close", None)
                    if close is not None:
                        close()

        self._server = make_server("127.0.0.1", 0, serialized, threaded=True, request_handler=QuietHandler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto", daemon=True)

    def start(self) -> MotoServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def client(self) -> Any:
        import boto3

        return boto3.client("dynamodb", endpoint_url=self.endpoint, region_name=REGION, **FAKE_CREDENTIALS)


@dataclass
class Instance:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str]

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: the instance dies mid-whatever, as a crashed host or a frozen Lambda would."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process.wait(10)


def _base_env() -> dict[str, str]:
    """The test process's environment minus anything AWS, agentstream or OpenAI."""
    drop = ("AWS_", "AGENTSTREAM_", "OPENAI_", "ANTHROPIC_", "SSE_", "OTEL_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    paths = [str(ROOT / "functions"), str(ROOT)]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def spawn(name: str, env: Mapping[str, str], log_dir: Path) -> Instance:
    """Start one instance (not yet waiting for it to be ready)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    log = log_dir / f"instance-{name}.log"
    full_env = {**_base_env(), **env}
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "tests.support.instance_app:app",
        "--fd",
        str(listener.fileno()),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    with listener, log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            pass_fds=(listener.fileno(),),
        )
    return Instance(name, f"http://127.0.0.1:{port}", process, log, dict(env))


def wait_ready(instance: Instance, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not instance.alive():
            raise RuntimeError(f"instance {instance.name} exited at start-up:\n{instance.log_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{instance.url}/healthz", timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"instance {instance.name} not ready in {timeout} s:\n{instance.log_text()[-3000:]}"
            )
        time.sleep(0.05)


@dataclass
class Cluster:
    """One table on one moto server, and the instances started on it (by name)."""

    moto: MotoServer
    table: str
    common_env: dict[str, str]
    log_dir: Path
    profiles: dict[str, dict[str, str]]
    instances: dict[str, Instance] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.db = self.moto.client()

    def start(self, *names: str) -> None:
        """Start these instances at once and wait until every one answers /healthz."""
        new = [
            spawn(n, {**self.common_env, **self.profiles[n]}, self.log_dir)
            for n in names
            if n not in self.instances
        ]
        self.instances.update({i.name: i for i in new})
        for instance in new:
            wait_ready(instance)

    def __getitem__(self, name: str) -> Instance:
        self.start(name)
        return self.instances[name]

    def stop(self) -> None:
        for instance in self.instances.values():
            with contextlib.suppress(Exception):
                instance.stop()

    # the table, seen through item shapes only

    def run_item(self, run_id: str) -> dict[str, Any] | None:
        key = {"pk": {"S": f"T#{TENANT}#R#{run_id}"}, "sk": {"S": "RUN"}}
        item: dict[str, Any] | None = self.db.get_item(
            TableName=self.table, Key=key, ConsistentRead=True
        ).get("Item")
        return item

    def run_log_items(self, run_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :ev)",
            "ExpressionAttributeValues": {":pk": {"S": f"T#{TENANT}#R#{run_id}"}, ":ev": {"S": "EV#"}},
            "ConsistentRead": True,
        }
        while True:
            page = self.db.query(**kwargs)
            items += page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


@contextlib.contextmanager
def running_cluster(
    log_dir: Path, *, env: Mapping[str, str], profiles: Mapping[str, Mapping[str, str]], table: str = "xinst"
) -> Iterator[Cluster]:
    """A moto server with the table, and a `Cluster` to start instances on it; all stopped afterwards."""
    from agentstream.store import create_table

    moto = MotoServer().start()
    try:
        create_table(table, moto.client())
        common = {
            **env,
            "AWS_ENDPOINT_URL_DYNAMODB": moto.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AGENTSTREAM_TABLE": table,
        }
        c = Cluster(moto, table, common, log_dir, {k: dict(v) for k, v in profiles.items()})
        try:
            yield c
        finally:
            c.stop()
    finally:
        moto.stop()


# SSE over HTTP, tolerant of what the tests do to servers


@dataclass
class Stream(SSEStream):
    # how reading ended: "eof" (the server ended the body), "stopped" (stop_after), "gave_up" (give_up_at),
    # "read_timeout" (nothing for read_timeout seconds), "broken: <error>" (the connection died)
    ended: str = ""

    @property
    def ids(self) -> list[int]:
        return [int(e.id) if e.id is not None else -1 for e in self.events]

    @property
    def types(self) -> list[str]:
        return [str(e.data.get("chunk_type")) for e in self.events]

    @property
    def done(self) -> SSEEvent | None:
        """The last event if it is a ``done``."""
        if self.events and self.events[-1].data.get("chunk_type") == "done":
            return self.events[-1]
        return None

    @property
    def run_id(self) -> str:
        return str(self.headers["x-run-id"])


def open_sse(
    method: str,
    url: str,
    *,
    key: str,
    body: dict[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
    stop_after: int | None = None,
    on_event: Callable[[Stream], None] | None = None,
    on_open: Callable[[Stream], None] | None = None,
    read_timeout: float = 5.0,
    give_up_at: float | None = None,
) -> Stream:
    """Read an SSE response as it arrives; never raises for a stream that breaks, stalls or runs long."""
    all_headers = {"Authorization": f"Bearer {key}", **(headers or {})}
    timeout = httpx.Timeout(5.0, read=read_timeout)
    with (
        httpx.Client(timeout=timeout) as client,
        client.stream(method, url, json=body, headers=all_headers, params=params) as r,
    ):
        result = Stream(r.status_code, r.headers)
        if on_open is not None:
            on_open(result)

        def give_up(stream: Stream) -> bool:
            if give_up_at is not None and time.monotonic() > give_up_at:
                stream.ended = "gave_up"
                return True
            return False

        try:
            stopped = consume_sse(
                r.iter_raw(), result, stop_after=stop_after, on_event=on_event, on_piece=give_up
            )
            if stopped:
                result.ended = result.ended or "stopped"
                return result
            result.ended = "eof"
        except httpx.ReadTimeout:
            result.ended = "read_timeout"
        except httpx.TransportError as e:
            result.ended = f"broken: {type(e).__name__}: {e}"
        return result


def content_of(events: Iterable[SSEEvent] | Iterable[tuple[int, dict[str, Any]]]) -> str:
    out = []
    for e in events:
        data = e.data if isinstance(e, SSEEvent) else e[1]
        if data.get("chunk_type") == "content":
            out.append(str(data["content"]))
    return "".join(out)
