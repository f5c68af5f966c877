"""The streaming runtime layer, run by its `bootstrap` in a subprocess, against an emulated Runtime API."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import statistics
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.functional.runtime_api_emulator import Result, RuntimeApiEmulator

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = ROOT / "layers" / "streaming-runtime" / "bootstrap"
HANDLERS = Path(__file__).with_name("runtime_handlers.py")
WAIT = 15.0


class RunningRuntime:
    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")


@asynccontextmanager
async def runtime(
    emulator: RuntimeApiEmulator,
    tmp_path: Path,
    *,
    handler: str = "runtime_handlers.handler",
    env: dict[str, str] | None = None,
    as_wrapper: bool = True,
) -> AsyncIterator[RunningRuntime]:
    """Start the runtime as Lambda does: as the exec wrapper (interpreter + the managed runtime's args)
    or directly (python3 from PATH)."""
    task_root = tmp_path / "task"
    task_root.mkdir(exist_ok=True)
    shutil.copy(HANDLERS, task_root / HANDLERS.name)
    log = tmp_path / "runtime.log"
    environment = {
        **os.environ,
        "AWS_LAMBDA_RUNTIME_API": emulator.address,
        "_HANDLER": handler,
        "LAMBDA_TASK_ROOT": str(task_root),
        "AWS_LAMBDA_FUNCTION_NAME": "agentstream",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/agentstream",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/11/25/[$LATEST]abc",
        **(env or {}),
    }
    if as_wrapper:
        args = [str(BOOTSTRAP), sys.executable, "-X", "frozen_modules=off", "/var/runtime/bootstrap.py"]
    else:
        args = [str(BOOTSTRAP)]
        environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            *args, env=environment, stdout=sink, stderr=asyncio.subprocess.STDOUT, cwd=task_root
        )
    try:
        yield RunningRuntime(process, log)
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


async def answer(future: asyncio.Future[Result]) -> Result:
    async with asyncio.timeout(WAIT):
        return await future


async def test_streams_each_chunk_as_it_is_yielded(tmp_path: Path) -> None:
    async with RuntimeApiEmulator() as emulator, runtime(emulator, tmp_path):
        result = await answer(emulator.invoke({"kind": "stream", "chunks": 5, "interval": 0.2}))
    emulator.assert_clean()
    assert result.kind == "streamed"
    assert result.prelude == {"statusCode": 200, "headers": {"content-type": "text/plain"}, "cookies": []}
    assert result.trailers == {}
    assert [chunk.data.split(b":")[0] for chunk in result.chunks] == [b"0", b"1", b"2", b"3", b"4"]
    arrivals = [chunk.at for chunk in result.chunks]
    # 200 ms apart when yielded, so spread out on arrival: nothing was held back and sent in a burst.
    assert all(later - earlier > 0.1 for earlier, later in itertools.pairwise(arrivals))
    assert result.prelude_at is not None
    assert arrivals[0] - result.prelude_at > 0.1
    # Each chunk reaches the Runtime API within milliseconds of the moment the handler yielded it.
    latencies = [chunk.at - float(chunk.data.split(b":")[1]) for chunk in result.chunks]
    assert statistics.median(latencies) < 0.02, latencies
    assert max(latencies) < 0.1, latencies


async def test_plain_value_is_a_buffered_response(tmp_path: Path) -> None:
    async with RuntimeApiEmulator() as emulator, runtime(emulator, tmp_path):
        result = await answer(emulator.invoke({"kind": "plain", "text": "你好"}))
    emulator.assert_clean()
    assert result.kind == "buffered"
    assert result.json == {"echo": {"kind": "plain", "text": "你好"}, "request_id": result.request_id}


async def test_async_handler_is_awaited(tmp_path: Path) -> None:
    async with RuntimeApiEmulator() as emulator, runtime(emulator, tmp_path):
        result = await answer(emulator.invoke({"kind": "async"}))
    emulator.assert_clean()
    assert result.json == {"async": True, "request_id": result.request_id}


@pytest.mark.parametrize(
    ("kind", "error_type", "message"),
    [
        ("raise_early", "ValueError", "boom before the first byte"),
        ("stream_raise_before_prelude", "KeyError", "'no prelude'"),
    ],
)
async def test_error_before_the_first_byte_goes_to_the_error_endpoint(
    tmp_path: Path, kind: str, error_type: str, message: str
) -> None:
    async with RuntimeApiEmulator() as emulator, runtime(emulator, tmp_path) as running:
        result = await answer(emulator.invoke({"kind": kind}))
    emulator.assert_clean()
    assert result.kind == "error"
    assert result.headers["lambda-runtime-function-error-type"] == error_type
    document = result.json
    assert (document["errorType"], document["errorMessage"]) == (error_type, message)
    assert document["requestId"] == result.request_id
    assert any("runtime_handlers.py" in frame for frame in document["stackTrace"])
    assert "[ERROR]\t" in running.output
    assert f"\t{result.request_id}\t{error_type}: " in running.output


async def test_error_mid_stream_ends_the_body_with_trailers(tmp_path: Path) -> None:
    async with RuntimeApiEmulator() as emulator, runtime(emulator, tmp_path) as running:
        result = await answer(emulator.invoke({"kind": "stream_then_raise"}))
    emulator.assert_clean()
    assert result.kind == "streamed"
    assert result.streamed_body == b"partial"
    assert result.trailers["lambda-runtime-function-error-type"] == "RuntimeError"
    error = result.trailer_error
    assert error is not None
    assert (error["errorType"], error["errorMessage"]) == ("RuntimeError", "boom mid-stream")
    assert "RuntimeError: boom mid-stream" in running.output


async def test_empty_chunks_do_not_end_the_body(tmp_path: Path) -> None:
    async with RuntimeApiEmulator() as emulator, runtime(emulator, tmp_path):
        result = await answer(emulator.invoke({"kind": "stream_empty_chunks"}))
    emulator.assert_clean()
    assert [chunk.data for chunk in result.chunks] == [b"after an empty chunk"]


@pytest.mark.parametrize(
    ("handler", "error_type"),
    [
        ("no_such_module.handler", "Runtime.ImportModuleError"),
        ("runtime_handlers.no_such_function", "Runtime.HandlerNotFound"),
        ("handler_without_module", "Runtime.MalformedHandlerName"),
    ],
)
async def test_init_error_is_reported_and_the_process_exits(
    tmp_path: Path, handler: str, error_type: str
) -> None:
    async with RuntimeApiEmulator() as emulator, runtime(emulator, tmp_path, handler=handler) as running:
        result = await answer(emulator.init_error)
        async with asyncio.timeout(WAIT):
            assert await running.process.wait() == 1
    emulator.assert_clean()
    assert result.headers["lambda-runtime-function-error-type"] == error_type
    assert result.json["errorType"] == error_type
    assert error_type in running.output


async def test_a_module_that_raises_on_import_fails_the_init_with_its_error_type(tmp_path: Path) -> None:
    (tmp_path / "task").mkdir()
    (tmp_path / "task" / "broken_at_import.py").write_text("raise LookupError('no such table')\n")
    async with (
        RuntimeApiEmulator() as emulator,
        runtime(emulator, tmp_path, handler="broken_at_import.handler") as running,
    ):
        result = await answer(emulator.init_error)
        async with asyncio.timeout(WAIT):
            assert await running.process.wait() == 1
    emulator.assert_clean()
    assert result.headers["lambda-runtime-function-error-type"] == "LookupError"
    assert (result.json["errorType"], result.json["errorMessage"]) == ("LookupError", "no such table")
    assert any("broken_at_import.py" in frame for frame in result.json["stackTrace"])


async def test_context_deadline_and_trace_id_reach_the_handler(tmp_path: Path) -> None:
    deadline_ms = int(time.time() * 1000) + 42_000
    trace = "Root=1-65f0a1b2-0123456789abcdef01234567;Parent=1a2b3c4d5e6f7a8b;Sampled=1"
    async with RuntimeApiEmulator() as emulator, runtime(emulator, tmp_path):
        result = await answer(
            emulator.invoke(
                {"kind": "context"},
                deadline_ms=deadline_ms,
                trace_id=trace,
                client_context={"custom": {"tenant": "t1"}, "client": None, "env": None},
                cognito_identity={"cognitoIdentityId": "id-1", "cognitoIdentityPoolId": "pool-1"},
            )
        )
        untraced = await answer(emulator.invoke({"kind": "context"}, trace_id=None))
    emulator.assert_clean()
    context = result.json
    assert 35_000 < context["remaining_ms"] <= 42_000
    assert context["trace_env"] == trace
    assert untraced.json["trace_env"] is None
    assert context | {"remaining_ms": 0, "thread": ""} == {
        "aws_request_id": result.request_id,
        "function_name": "agentstream",
        "function_version": "$LATEST",
        "invoked_function_arn": "arn:aws:lambda:us-east-1:123456789012:function:agentstream",
        "memory_limit_in_mb": 512,
        "log_group_name": "/aws/lambda/agentstream",
        "log_stream_name": "2026/11/25/[$LATEST]abc",
        "remaining_ms": 0,
        "response_streaming": True,
        "identity": "id-1",
        "client_custom": {"tenant": "t1"},
        "trace_env": trace,
        "thread": "",
    }


async def test_invocations_in_a_row_share_one_connection_and_one_thread(tmp_path: Path) -> None:
    async with RuntimeApiEmulator() as emulator, runtime(emulator, tmp_path, as_wrapper=False):
        results = [
            await answer(emulator.invoke(event))
            for event in (
                {"kind": "stream", "chunks": 2, "interval": 0.01},
                {"kind": "raise_early"},
                {"kind": "context"},
                {"kind": "stream_then_raise"},
                {"kind": "plain"},
                {"kind": "context"},
            )
        ]
    emulator.assert_clean()
    assert [r.kind for r in results] == ["streamed", "error", "buffered", "streamed", "buffered", "buffered"]
    assert emulator.connections == 1
    assert {r.connection for r in results} == {1}
    assert results[2].json["thread"] == results[5].json["thread"]


async def test_slots_serve_invocations_concurrently(tmp_path: Path) -> None:
    async with (
        RuntimeApiEmulator() as emulator,
        runtime(emulator, tmp_path, env={"AWS_LAMBDA_MAX_CONCURRENCY": "2"}),
    ):
        first = emulator.invoke({"kind": "stream", "chunks": 4, "interval": 0.15})
        second = emulator.invoke({"kind": "stream", "chunks": 4, "interval": 0.15})
        one, two = await answer(first), await answer(second)
    emulator.assert_clean()
    assert emulator.connections == 2
    # Both streams were in flight at the same time.
    assert two.chunks[0].at < one.chunks[-1].at
    assert one.chunks[0].at < two.chunks[-1].at


async def test_stream_is_closed_when_the_runtime_api_connection_breaks(tmp_path: Path) -> None:
    marker = tmp_path / "closed"
    async with RuntimeApiEmulator() as emulator, runtime(emulator, tmp_path) as running:
        broken = await answer(
            emulator.invoke({"kind": "stream_until_closed", "marker": str(marker)}, drop_after_chunks=3)
        )
        # The runtime closes the stream before it takes the next invocation.
        after = await answer(emulator.invoke({"kind": "plain"}))
    emulator.assert_clean()
    assert len(broken.chunks) == 3
    assert marker.read_text() == "closed"
    assert after.kind == "buffered"
    assert emulator.connections == 2
    assert "lost the Runtime API" in running.output


@pytest.mark.parametrize("pad", [None, 2048])
async def test_sse_padding_is_opt_in_and_keeps_the_events(tmp_path: Path, pad: int | None) -> None:
    env = {"LAMBDA_STREAMING_SSE_PAD_BYTES": str(pad)} if pad else {}
    event: dict[str, Any] = {
        "kind": "stream",
        "chunks": 3,
        "interval": 0.01,
        "content_type": "text/event-stream",
        "template": 'data: {{"n": {n}}}\n\n',
    }
    async with RuntimeApiEmulator() as emulator, runtime(emulator, tmp_path, env=env):
        result = await answer(emulator.invoke(event))
    emulator.assert_clean()
    sizes = [len(chunk.data) for chunk in result.chunks]
    assert sizes == ([pad] * 3 if pad else [len('data: {"n": 0}\n\n')] * 3)
    events = [
        json.loads(line.removeprefix("data: "))
        for line in result.streamed_body.decode().splitlines()
        if line.startswith("data: ")
    ]
    assert events == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert all(
        line == "" or line.startswith(("data: ", ":")) for line in result.streamed_body.decode().split("\n")
    )
