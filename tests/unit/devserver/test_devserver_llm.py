"""The local model's install decisions: reuse the built wheel, refuse without a compiler, show progress."""

from __future__ import annotations

import platform
from typing import TYPE_CHECKING

from agentstream.devserver.llm import LLAMA_CPP_VERSION, Progress, build_blocker, cached_wheel

if TYPE_CHECKING:
    from pathlib import Path


def test_no_wheel_yet(tmp_path: Path) -> None:
    assert cached_wheel(tmp_path) is None
    assert cached_wheel(tmp_path / "missing") is None


def test_the_built_wheel_is_reused(tmp_path: Path) -> None:
    wheel = tmp_path / f"llama_cpp_python-{LLAMA_CPP_VERSION}-py3-none-linux_{platform.machine()}.whl"
    wheel.touch()
    (tmp_path / f"llama_cpp_python-0.0.1-py3-none-linux_{platform.machine()}.whl").touch()
    assert cached_wheel(tmp_path) == wheel


def test_a_wheel_for_another_version_or_machine_is_not_used(tmp_path: Path) -> None:
    (tmp_path / "llama_cpp_python-0.0.1-py3-none-linux_x86_64.whl").touch()
    (tmp_path / f"llama_cpp_python-{LLAMA_CPP_VERSION}-py3-none-linux_riscv64.whl").touch()
    assert cached_wheel(tmp_path) is None


def test_no_compiler_means_no_build() -> None:
    assert "build-essential" in (build_blocker(lambda name: None) or "")
    only_c = {"cc": "/usr/bin/cc"}
    assert build_blocker(only_c.get) is not None
    both = {"gcc": "/usr/bin/gcc", "g++": "/usr/bin/g++"}
    assert build_blocker(both.get) is None


def test_progress_is_a_short_line_every_few_seconds() -> None:
    progress = Progress(every=10)
    t0 = progress.started
    assert progress.feed("Building wheel for llama-cpp-python", now=t0 + 1) is None
    assert progress.feed("  [12/193] /usr/bin/g++ -O3 ggml.c", now=t0 + 5) is None
    line = progress.feed("  [40/193] /usr/bin/g++ -O3 llama.cpp", now=t0 + 65)
    assert line == "  building llama-cpp-python: compiled 40/193, 1m05s"
    assert progress.feed("  [41/193] ...", now=t0 + 66) is None
