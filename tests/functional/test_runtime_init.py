"""Lambda's init phase with the real handler: the app is built (and warmed up) before the runtime asks for
its first invocation, and an app that cannot start fails the init, not the first request."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import load_event
from tests.functional.runtime_api_emulator import RuntimeApiEmulator
from tests.functional.test_streaming_runtime import WAIT, answer, runtime

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio

HANDLER = "agentstream.handlers.stream.handler"


def healthz_event() -> dict[str, Any]:
    event = load_event("function_url_v2.json")
    event.update(rawPath="/healthz", rawQueryString="", body=None)
    event["requestContext"]["http"].update(method="GET", path="/healthz")
    return event


def imported_modules(log: str) -> set[str]:
    """The modules that ``PYTHONPROFILEIMPORTTIME`` has reported as imported so far."""
    return {line.rsplit("|", 1)[1].strip() for line in log.splitlines() if line.startswith("import time:")}


async def test_the_app_is_ready_before_the_first_invocation_is_asked_for(tmp_path: Path) -> None:
    async with (
        RuntimeApiEmulator() as emulator,
        runtime(emulator, tmp_path, handler=HANDLER, env={"PYTHONPROFILEIMPORTTIME": "1"}) as running,
    ):
        await asyncio.wait_for(emulator.polled.wait(), WAIT)
        # The runtime now waits in /next and no event is queued: whatever it imported, it did at init.
        at_init = imported_modules(running.output)
        result = await answer(emulator.invoke(healthz_event()))
    emulator.assert_clean()
    # (reported when the module's body, start-up and warm-up included, has run)
    assert "agentstream.app" in at_init
    assert (result.kind, result.streamed_body) == ("streamed", b'{"status":"ok"}')


@pytest.mark.parametrize(
    ("task_files", "env", "error_type", "message"),
    [
        pytest.param(
            # stands in for a deployment package that lacks a dependency of the app
            {"fastapi.py": "raise ImportError(\"No module named 'fastapi'\")\n"},
            {},
            "Runtime.ImportModuleError",
            "Unable to import module 'agentstream.handlers.stream': No module named 'fastapi'",
            id="missing-dependency",
        ),
        pytest.param(
            {}, {"AGENTSTREAM_MAX_STEPS": "0"}, "ValidationError", "AGENTSTREAM_MAX_STEPS", id="bad-setting"
        ),
    ],
)
async def test_an_app_that_cannot_start_fails_the_init(
    tmp_path: Path, task_files: dict[str, str], env: dict[str, str], error_type: str, message: str
) -> None:
    (tmp_path / "task").mkdir()
    for name, text in task_files.items():
        (tmp_path / "task" / name).write_text(text)
    async with (
        RuntimeApiEmulator() as emulator,
        runtime(emulator, tmp_path, handler=HANDLER, env=env) as running,
    ):
        error = await answer(emulator.init_error)
        async with asyncio.timeout(WAIT):
            assert await running.process.wait() == 1
    emulator.assert_clean()
    assert not emulator.polled.is_set()
    assert error.headers["lambda-runtime-function-error-type"] == error_type
    assert error.json["errorType"] == error_type
    assert message in error.json["errorMessage"]


START_UP_STATE = """
import gc, json, sys
import agentstream.app as started
print(json.dumps({
    "dynamodb_client": started.app.state.store.agents._table._client_instance is not None,
    "default_provider": "agentstream.core.providers.openai" in sys.modules,
    "tls_context": sys.modules["agentstream.core.providers._http"]._ssl_context.cache_info().currsize,
    "frozen": gc.get_freeze_count(),
    "app_in_gc_generations": any(o is started.app for o in gc.get_objects()),
}))
"""


def test_start_up_makes_the_dynamodb_client_and_freezes_what_it_built() -> None:
    # The same import serves uvicorn (agentstream.app:app) and both Lambda handlers.
    done = subprocess.run(
        [sys.executable, "-c", START_UP_STATE], capture_output=True, text=True, check=True, timeout=60
    )
    state = json.loads(done.stdout)
    assert state["dynamodb_client"]
    assert state["default_provider"]
    assert state["tls_context"] == 1
    # Start-up objects (the app among them) left the collector's generations: full collections skip them.
    assert state["frozen"] > 10_000
    assert not state["app_in_gc_generations"]
