"""Child processes that `make run` starts: each in its own process group, all stopped together."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from pathlib import Path

__all__ = [
    "DevServerError",
    "Service",
    "free_port",
    "port_is_free",
    "stop_all",
    "tail",
]

_PR_SET_PDEATHSIG = 1


class DevServerError(Exception):
    """A problem the user can act on; the message says what happened and what to do."""


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on ``host:port`` (bound the way uvicorn binds, with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file, indented, for error messages."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "    (no log)"
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the orchestrator dies, even by SIGKILL (Linux only)."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return
    libc = ctypes.CDLL(libc_name, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Service:
    """One child process, the leader of its own process group so that stopping it stops its children.

    Output goes to ``log`` (a file) or, when ``log`` is None, to the orchestrator's own stdout/stderr.
    """

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        *,
        log: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.args = list(args)
        self.log = log
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = None
        if self.log is not None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            out = self.log.open("ab")
        try:
            self.proc = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT if out is not None else None,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        finally:
            if out is not None:
                out.close()

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} was not started")
        return self.proc.pid

    def exited(self) -> int | None:
        """The exit code once the process has ended, else None."""
        return None if self.proc is None else self.proc.poll()

    def failure(self, what: str) -> DevServerError:
        where = f"; last lines of {self.log}:\n{tail(self.log)}" if self.log is not None else ""
        return DevServerError(f"{self.name} {what}{where}")

    def wait_http(
        self, url: str, *, timeout: float, ready: Callable[[httpx.Response], bool] = lambda _: True
    ) -> None:
        """Poll ``url`` until ``ready(response)``; fail early if the process exits."""
        deadline = time.monotonic() + timeout
        while True:
            code = self.exited()
            if code is not None:
                raise self.failure(f"exited with code {code} while starting")
            with contextlib.suppress(httpx.HTTPError):
                if ready(httpx.get(url, timeout=2.0)):
                    return
            if time.monotonic() > deadline:
                raise self.failure(f"did not answer at {url} within {timeout:.0f} s")
            time.sleep(0.1)

    def signal_group(self, sig: int) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)


def stop_all(services: Iterable[Service], *, grace: float = 8.0) -> None:
    """SIGTERM every group, wait up to ``grace`` seconds in all, then SIGKILL what is left."""
    started = [s for s in services if s.proc is not None]
    for service in started:
        service.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for service in started:
        assert service.proc is not None
        try:
            service.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            service.signal_group(signal.SIGKILL)
            service.proc.wait()
        # Whatever the leader left behind in its group goes too.
        service.signal_group(signal.SIGKILL)
