"""Runs the AI SDK's own client pieces (tests/node/ui_client.mjs, npm ``ai`` 5 and 7) against a server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
SDKS = ("ai5", "ai7")  # ai 5.0.216 validates every part strictly; ai 7 is the current release


def node() -> str:
    """The node executable, with the pinned packages installed (``.ci/run`` installs them; a checkout
    without them gets them here). Skips only when node itself is missing."""
    executable = shutil.which("node")
    if executable is None:
        pytest.skip("node is not installed: the AI SDK client tests run the npm `ai` package in node")
    if not all((NODE_DIR / "node_modules" / sdk / "package.json").exists() for sdk in SDKS):
        npm = shutil.which("npm")
        assert npm is not None, "npm is needed to install tests/node (npm ci)"
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR, check=True, timeout=300
        )
    return executable


def run_ui_client(**args: Any) -> Any:
    """One run of ui_client.mjs (see its header for the modes); its JSON answer."""
    done = subprocess.run(
        [node(), str(NODE_DIR / "ui_client.mjs"), json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
        check=False,
    )
    assert done.returncode == 0, f"ui_client.mjs failed:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout)
