"""An agentstream instance for cross-instance tests: ``python -m uvicorn tests.support.instance_app:app``.

The real app (``agentstream.web.app.create_app()``, configured from the environment like any instance),
plus test-only knobs read from environment variables, applied in this process only:

- ``AGENTSTREAM_TEST_SLOW_TOOL_SECONDS``: adds a built-in-style tool ``slow_tool`` (arguments
  ``{"seconds": float}``, default this value) that sleeps, then answers ``slept``.
- ``AGENTSTREAM_TEST_FAIL_EV_WRITES``, ``AGENTSTREAM_TEST_STORE_LATENCY_MS``,
  ``AGENTSTREAM_TEST_THROTTLE_OPS`` (+ ``_MS``): store faults, see tests/support/store_faults.py.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

from tests.support.store_faults import StoreFaults, install

ENV_SLOW_TOOL_SECONDS = "AGENTSTREAM_TEST_SLOW_TOOL_SECONDS"
SLOW_TOOL = "slow_tool"


def _add_slow_tool(default_seconds: float) -> None:
    """Register ``slow_tool`` next to the built-in tools (and among the names an agent may list)."""
    from agentstream.core import agents, tools
    from agentstream.core.providers.base import ToolSpec

    async def run(args: Mapping[str, Any]) -> str:
        await asyncio.sleep(float(args.get("seconds", default_seconds)))
        return "slept"

    spec = ToolSpec(
        SLOW_TOOL,
        "Sleep for a while (a tool that takes long).",
        {"type": "object", "properties": {"seconds": {"type": "number"}}},
    )
    tools.BUILTIN_TOOLS[SLOW_TOOL] = tools.Tool(spec, run)
    for module in (tools, agents):
        if hasattr(module, "TOOL_NAMES"):
            module.TOOL_NAMES = frozenset({*module.TOOL_NAMES, SLOW_TOOL})


def build() -> Any:
    faults = StoreFaults.from_env()
    if faults.active:
        install(faults)
    if os.environ.get(ENV_SLOW_TOOL_SECONDS):
        _add_slow_tool(float(os.environ[ENV_SLOW_TOOL_SECONDS]))
    from agentstream.web.app import create_app

    return create_app()


app = build()
