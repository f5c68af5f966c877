"""Several invocations at once in one runtime process (``AWS_LAMBDA_MAX_CONCURRENCY``, Lambda Managed
Instances): each keeps its own trace id, deadline and answer, whatever the others do."""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from typing import TYPE_CHECKING, Any

import pytest

from tests.functional.runtime_api_emulator import Result, RuntimeApiEmulator
from tests.functional.test_streaming_runtime import WAIT, answer, runtime

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

pytestmark = pytest.mark.anyio


def trace(number: int) -> str:
    return f"Root=1-65f0a1b2-{number:024x};Parent=1a2b3c4d5e6f7a8b;Sampled=1"


def in_ms(seconds: float) -> int:
    return int((time.time() + seconds) * 1000)


def numbers(result: Result) -> list[int]:
    return [int(chunk.data.split(b":")[0]) for chunk in result.chunks]


async def test_trace_ids_never_cross(tmp_path: Path) -> None:
    async with (
        RuntimeApiEmulator() as emulator,
        runtime(emulator, tmp_path, env={"AWS_LAMBDA_MAX_CONCURRENCY": "8"}),
    ):
        futures = [
            emulator.invoke({"kind": "trace", "pause": 0.02 * (n % 5)}, trace_id=trace(n)) for n in range(24)
        ]
        untraced = emulator.invoke({"kind": "trace"}, trace_id=None)
        results = [await answer(future) for future in futures]
        none = await answer(untraced)
    emulator.assert_clean()
    assert emulator.peak_outstanding == 8
    for n, result in enumerate(results):
        # On the handler's thread and on the loop, after the other invocations ran in between.
        assert result.json["seen"] == [trace(n), trace(n)]
        assert result.json["request_id"] == result.request_id
        # With several slots the process-wide variable would be some invocation's id: it stays unset.
        assert result.json["env"] is None
    assert none.json["seen"] == [None, None]


async def test_without_concurrency_invocations_run_one_at_a_time(tmp_path: Path) -> None:
    async with RuntimeApiEmulator() as emulator, runtime(emulator, tmp_path):
        futures = [emulator.invoke({"kind": "stream", "chunks": 3, "interval": 0.05}) for _ in range(3)]
        traced = emulator.invoke({"kind": "trace"}, trace_id=trace(7))
        results = [await answer(future) for future in futures]
        one = await answer(traced)
    emulator.assert_clean()
    assert emulator.peak_outstanding == 1
    assert emulator.connections == 1
    for earlier, later in itertools.pairwise(results):
        assert later.prelude_at is not None
        assert earlier.chunks[-1].at <= later.prelude_at
    # One invocation at a time: the conventional variable is set, and is this invocation's.
    assert one.json == {"seen": [trace(7), trace(7)], "env": trace(7), "request_id": one.request_id}


async def test_failing_and_timed_out_invocations_leave_the_others_alone(tmp_path: Path) -> None:
    marker = tmp_path / "closed"
    async with (
        RuntimeApiEmulator() as emulator,
        runtime(emulator, tmp_path, env={"AWS_LAMBDA_MAX_CONCURRENCY": "6"}) as running,
    ):
        started = time.monotonic()
        healthy = [emulator.invoke({"kind": "stream", "chunks": 8, "interval": 0.1}) for _ in range(2)]
        blocked = emulator.invoke({"kind": "block", "seconds": 3}, deadline_ms=in_ms(0.5))
        endless = emulator.invoke(
            {"kind": "stream_until_closed", "marker": str(marker)}, deadline_ms=in_ms(0.7)
        )
        raised = emulator.invoke({"kind": "raise_early"})
        broken = emulator.invoke({"kind": "stream_then_raise"})
        timed_out = await answer(blocked)
        # The blocked thread sleeps on; its slot serves the next invocations on a fresh one.
        after = [emulator.invoke({"kind": "plain", "n": n}) for n in range(8)]
        after_results = [await answer(future) for future in after]
        served_by = time.monotonic() - started
        streams = [await answer(future) for future in healthy]
        cut, failed, mid = await answer(endless), await answer(raised), await answer(broken)
    emulator.assert_clean()
    assert served_by < 2.0, "a slot stayed blocked behind a timed-out synchronous call"
    assert [r.json["echo"]["n"] for r in after_results] == list(range(8))
    for stream in streams:
        assert (stream.kind, stream.trailers, numbers(stream)) == ("streamed", {}, list(range(8)))
        gaps = [b.at - a.at for a, b in itertools.pairwise(stream.chunks)]
        assert max(gaps) < 0.3, gaps
    assert timed_out.kind == "error"
    assert timed_out.json["errorType"] == "InvocationTimeout"
    assert timed_out.json["requestId"] == timed_out.request_id
    assert cut.kind == "streamed"
    assert cut.chunks, "the endless stream sent nothing before its deadline"
    assert cut.trailer_error is not None
    assert cut.trailer_error["errorType"] == "InvocationTimeout"
    assert marker.read_text() == "closed"
    assert failed.json["errorType"] == "ValueError"
    assert mid.streamed_body == b"partial"
    assert mid.trailer_error is not None
    assert mid.trailer_error["errorType"] == "RuntimeError"
    assert f"\t{timed_out.request_id}\tInvocationTimeout: " in running.output


async def test_sigterm_lets_the_streams_in_flight_finish(tmp_path: Path) -> None:
    marker = tmp_path / "closed"
    env = {"AWS_LAMBDA_MAX_CONCURRENCY": "4", "LAMBDA_STREAMING_SHUTDOWN_GRACE_MS": "1500"}
    firsts: dict[str, asyncio.Event] = {}

    def watch(name: str) -> Callable[[dict[str, Any] | bytes | None], None]:
        firsts[name] = asyncio.Event()

        def on_stream(part: dict[str, Any] | bytes | None) -> None:
            if isinstance(part, bytes):
                firsts[name].set()

        return on_stream

    async with RuntimeApiEmulator() as emulator, runtime(emulator, tmp_path, env=env) as running:
        short = [
            emulator.invoke({"kind": "stream", "chunks": 6, "interval": 0.1}, on_stream=watch(f"s{n}"))
            for n in range(2)
        ]
        endless = emulator.invoke(
            {"kind": "stream_until_closed", "marker": str(marker)},
            on_stream=watch("endless"),
        )
        async with asyncio.timeout(WAIT):
            for event in firsts.values():
                await event.wait()
        running.process.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        finished = [await answer(future) for future in short]
        cut = await answer(endless)
        cut_after = time.monotonic() - stopped
        async with asyncio.timeout(WAIT):
            assert await running.process.wait() == 0
    emulator.assert_clean()
    for stream in finished:
        assert (stream.trailers, numbers(stream)) == ({}, list(range(6)))
    assert cut.trailer_error is not None
    assert cut.trailer_error["errorType"] == "InvocationTimeout"
    assert "shut down" in cut.trailer_error["errorMessage"]
    assert 1.3 < cut_after < 3.0
    assert marker.read_text() == "closed"


async def test_an_init_error_is_reported_once_whatever_the_slots(tmp_path: Path) -> None:
    env = {"AWS_LAMBDA_MAX_CONCURRENCY": "8"}
    async with (
        RuntimeApiEmulator() as emulator,
        runtime(emulator, tmp_path, handler="no_such_module.handler", env=env) as running,
    ):
        error = await answer(emulator.init_error)
        async with asyncio.timeout(WAIT):
            assert await running.process.wait() == 1
    # A second /init/error would be a violation; none of the slots asked for an invocation.
    emulator.assert_clean()
    assert not emulator.polled.is_set()
    assert error.json["errorType"] == "Runtime.ImportModuleError"


async def test_plain_synchronous_handlers_run_side_by_side_one_thread_per_slot(tmp_path: Path) -> None:
    # A plain (buffered, blocking) handler holds its slot's thread, never the loop or another slot's.
    async with (
        RuntimeApiEmulator() as emulator,
        runtime(emulator, tmp_path, env={"AWS_LAMBDA_MAX_CONCURRENCY": "4"}),
    ):
        started = time.monotonic()
        blocked = [emulator.invoke({"kind": "block", "seconds": 1.0}) for _ in range(4)]
        plain = emulator.invoke({"kind": "plain"})
        results = [await answer(future) for future in blocked]
        took = time.monotonic() - started
        fifth = await answer(plain)
    emulator.assert_clean()
    assert [r.json for r in results] == [{"blocked": 1.0}] * 4
    assert emulator.peak_outstanding == 4
    # One at a time would take 4 s; four threads take about 1 s (bound generous for a busy machine).
    assert took < 3.0
    # The fifth waited for a free slot, and got its answer.
    assert fifth.json == {"echo": {"kind": "plain"}, "request_id": fifth.request_id}
