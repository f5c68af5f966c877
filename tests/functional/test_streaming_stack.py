"""The whole Lambda path: runtime layer (subprocess) → agentstream.handlers.stream → an ASGI app's SSE."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import load_event
from tests.functional.runtime_api_emulator import RuntimeApiEmulator
from tests.functional.test_streaming_runtime import answer, runtime

pytestmark = pytest.mark.anyio

TEST_APP = Path(__file__).resolve().parents[1] / "unit" / "handlers" / "streaming_test_app.py"
BUFFERED = {"AGENTSTREAM_INVOKE_MODE": "buffered"}
APP_HANDLER = """\
from streaming_test_app import app

from agentstream.handlers.stream import make_handler

handler = make_handler(app)
"""


@pytest.fixture
def task_root(tmp_path: Path) -> Path:
    root = tmp_path / "task"
    root.mkdir()
    shutil.copy(TEST_APP, root / TEST_APP.name)
    (root / "app_handler.py").write_text(APP_HANDLER)
    return tmp_path


def chat_event(name: str, count: int, interval: float) -> dict[str, Any]:
    data = load_event(name)
    if "rawQueryString" in data:
        data["rawQueryString"] = f"count={count}&interval={interval}"
    else:
        data["queryStringParameters"] = {"count": str(count), "interval": str(interval)}
        data["multiValueQueryStringParameters"] = None
    return data


def sse(data: bytes) -> dict[str, Any]:
    (line,) = [line for line in data.decode().splitlines() if line.startswith("data: ")]
    parsed: dict[str, Any] = json.loads(line[6:])
    return parsed


async def test_function_url_chat_streams_event_by_event(task_root: Path) -> None:
    async with (
        RuntimeApiEmulator() as emulator,
        runtime(emulator, task_root, handler="app_handler.handler"),
    ):
        result = await answer(emulator.invoke(chat_event("function_url_v2.json", count=5, interval=0.2)))
    emulator.assert_clean()
    assert result.kind == "streamed"
    assert result.prelude is not None
    assert result.prelude["statusCode"] == 200
    assert result.prelude["headers"]["content-type"] == "text/event-stream; charset=utf-8"
    assert len(result.prelude["cookies"]) == 2
    events = [sse(chunk.data) for chunk in result.chunks]
    assert [e["chunk_type"] for e in events] == ["start"] + ["content"] * 5 + ["done"]
    assert 25_000 < events[0]["remaining_ms"] <= 30_000  # the emulator's deadline, seen by the app
    # Each event reaches the Runtime API within milliseconds of the app yielding it...
    latencies = [chunk.at - event["t"] for chunk, event in zip(result.chunks, events, strict=True)]
    assert statistics.median(latencies) < 0.02, latencies
    assert max(latencies) < 0.1, latencies
    # ...so the first content event arrives long before the last one.
    assert result.chunks[-2].at - result.chunks[1].at > 0.6


async def test_rest_chat_streams_with_multi_value_headers(task_root: Path) -> None:
    async with (
        RuntimeApiEmulator() as emulator,
        runtime(emulator, task_root, handler="app_handler.handler"),
    ):
        result = await answer(emulator.invoke(chat_event("rest_proxy.json", count=2, interval=0)))
    emulator.assert_clean()
    assert result.prelude is not None
    assert len(result.prelude["multiValueHeaders"]["set-cookie"]) == 2
    assert sse(result.chunks[-1].data)["chunk_type"] == "done"


async def test_buffered_mode_answers_the_whole_proxy_response(task_root: Path) -> None:
    async with (
        RuntimeApiEmulator() as emulator,
        runtime(
            emulator, task_root, handler="app_handler.handler", env={"AGENTSTREAM_INVOKE_MODE": "buffered"}
        ),
    ):
        result = await answer(emulator.invoke(chat_event("function_url_v2.json", count=2, interval=0)))
    emulator.assert_clean()
    assert result.kind == "buffered"
    response = result.json
    assert response["statusCode"] == 200
    assert response["body"].count("data: ") == 4
