"""`make run` itself, started as a user would (scripted provider, to stay fast), then driven over HTTP.

Ctrl-C is a SIGINT to make's whole process group, as a terminal sends it; afterwards no process that
`make run` started may be left.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from agentstream.devserver.procs import free_port, port_is_free
from tests.support.processes import alive

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _children(pid: int) -> set[int]:
    """Every descendant of ``pid`` now (from /proc), whatever process group or session it is in."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def test_make_run_serves_streams_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    env = {**os.environ, "PROVIDER": "scripted", "PORT": str(port), "DATA_DIR": str(data_dir)}
    make = subprocess.Popen(
        ["make", "--no-print-directory", "run"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    output: list[str] = []

    def read() -> None:
        assert make.stdout is not None
        for line in make.stdout:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        url = None
        deadline = time.monotonic() + 180
        while url is None and time.monotonic() < deadline and make.poll() is None:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            output.append(line)
            match = re.search(r"chat page:\s+(http://127\.0\.0\.1:(\d+)/#key=([^&\s]+)&agent=(\S+))", line)
            if match:
                url = match.group(1)
                assert int(match.group(2)) == port
                key, agent_id = match.group(3), match.group(4)
        assert url is not None, "make run printed no chat URL:\n" + "".join(output)

        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
        assert "<html" in httpx.get(f"{base}/").text  # the chat page needs no key
        # locally the API's document and Swagger UI are published (a deployed app keeps them behind a key)
        assert httpx.get(f"{base}/openapi.json").json()["paths"]
        assert httpx.get(f"{base}/docs").status_code == 200
        assert (data_dir / "admin-key").read_text().strip() == key
        assert (data_dir / "admin-key").stat().st_mode & 0o077 == 0

        headers = {"Authorization": f"Bearer {key}"}
        events = []
        body = {"message": "Hello!", "user_id": "test"}
        with httpx.stream(
            "POST", f"{base}/api/v1/agents/{agent_id}/chat/stream", json=body, headers=headers, timeout=30
        ) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data:"):
                    events.append(json.loads(line[5:]))
        assert events[0]["chunk_type"] == "start"
        assert events[-1]["chunk_type"] == "done"
        assert events[-1]["status"] == "completed"
        text = "".join(e["content"] for e in events if e["chunk_type"] == "content")
        assert text
        assert text == events[-1]["final_response"]

        started = _children(make.pid)
        assert len(started) >= 3, "expected the orchestrator, DynamoDB and the app"
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGINT)
        try:
            make.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(make.pid, signal.SIGKILL)
            raise
        finally:
            reader.join(timeout=5)
            assert make.stdout is not None
            make.stdout.close()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in started if alive(pid)], "processes left behind after Ctrl-C"
    assert port_is_free("127.0.0.1", port)
