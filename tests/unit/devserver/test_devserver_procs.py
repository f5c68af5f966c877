"""Child processes of `make run`: ports, readiness, and stopping whole process groups."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest
from tests.support.processes import alive

from agentstream.devserver.procs import DevServerError, Service, free_port, port_is_free, stop_all


def test_a_listening_port_is_not_free() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert not port_is_free("127.0.0.1", port)
    assert port_is_free("127.0.0.1", port)


def test_a_port_taken_on_all_interfaces_is_not_free_on_loopback() -> None:
    with socket.socket() as listener:
        listener.bind(("0.0.0.0", 0))
        listener.listen()
        assert not port_is_free("127.0.0.1", listener.getsockname()[1])


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_stop_all_takes_down_the_whole_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # A shell that starts a grandchild: the kind of tree (npm, java, pip) that must not be orphaned.
    service = Service("tree", ["sh", "-c", f"sleep 60 & echo $$ $! > {pids}; wait"])
    service.start()
    deadline = time.monotonic() + 5
    while not (pids.exists() and pids.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.02)
    shell, grandchild = map(int, pids.read_text().split())
    assert os.getpgid(grandchild) == service.pid
    stop_all([service])
    assert not alive(shell)
    deadline = time.monotonic() + 5
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(grandchild)


def test_stop_all_kills_what_ignores_sigterm() -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    service = Service("stubborn", [sys.executable, "-c", code])
    service.start()
    time.sleep(0.3)
    started = time.monotonic()
    stop_all([service], grace=0.5)
    assert service.exited() is not None
    assert time.monotonic() - started < 5


def test_wait_http_reports_a_service_that_dies(tmp_path: Path) -> None:
    log = tmp_path / "svc.log"
    service = Service("broken", ["sh", "-c", "echo cannot open the database >&2; exit 3"], log=log)
    service.start()
    with pytest.raises(DevServerError, match=r"broken exited with code 3(.|\n)*cannot open the database"):
        service.wait_http(f"http://127.0.0.1:{free_port()}/", timeout=10)
