"""Retrying: a model call is made again only while nothing of it has been streamed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable

import pytest

from agentstream.core.providers._retry import Retrying, RetryPolicy
from agentstream.core.providers.base import Message, ModelRequest, ProviderEvent, StepEnd, TextChunk
from agentstream.errors import UpstreamError, UpstreamRateLimited

pytestmark = pytest.mark.anyio

REQUEST = ModelRequest(model="m", messages=[Message("user", "hi")])
QUICK = RetryPolicy(attempts=3, base_delay=0.01, max_delay=1.0)

Script = Callable[[], AsyncGenerator[ProviderEvent, None]]


class Scripted:
    """A provider whose n-th call runs the n-th script; records calls and closes."""

    def __init__(self, *scripts: Script) -> None:
        self.scripts = list(scripts)
        self.calls = 0
        self.closed = 0

    async def stream(self, request: ModelRequest) -> AsyncGenerator[ProviderEvent, None]:
        script = self.scripts[self.calls]
        self.calls += 1
        try:
            async for event in script():
                yield event
        finally:
            self.closed += 1


def failing(error: UpstreamError, *, after: tuple[ProviderEvent, ...] = ()) -> Script:
    async def script() -> AsyncGenerator[ProviderEvent, None]:
        for event in after:
            yield event
        raise error

    return script


def answering(text: str) -> Script:
    async def script() -> AsyncGenerator[ProviderEvent, None]:
        yield TextChunk(text)
        yield StepEnd("stop")

    return script


async def collect(provider: Retrying) -> list[ProviderEvent]:
    return [event async for event in provider.stream(REQUEST)]


async def collect_into(received: list[ProviderEvent], provider: Retrying) -> None:
    """Like collect, but what arrived before a failure stays in ``received``."""
    async for event in provider.stream(REQUEST):
        received.append(event)


async def test_a_retryable_failure_before_anything_streamed_is_tried_again() -> None:
    inner = Scripted(
        failing(UpstreamRateLimited("slow down", retryable=True)),
        failing(UpstreamError("overloaded", retryable=True)),
        answering("hi"),
    )
    assert await collect(Retrying(inner, QUICK)) == [TextChunk("hi"), StepEnd("stop")]
    assert inner.calls == 3
    assert inner.closed == 3


async def test_a_failure_after_the_first_event_is_final() -> None:
    inner = Scripted(failing(UpstreamError("dropped", retryable=True), after=(TextChunk("par"),)))
    received: list[ProviderEvent] = []
    with pytest.raises(UpstreamError, match="dropped"):
        await collect_into(received, Retrying(inner, QUICK))
    assert received == [TextChunk("par")]
    assert inner.calls == 1


@pytest.mark.parametrize(
    "error",
    [UpstreamError("bad request"), UpstreamRateLimited("wait an hour", retryable=True, retry_after=3600)],
    ids=["not-retryable", "retry-after-too-long"],
)
async def test_errors_that_another_try_would_not_fix_are_not_retried(error: UpstreamError) -> None:
    inner = Scripted(failing(error), answering("never"))
    with pytest.raises(UpstreamError) as caught:
        await collect(Retrying(inner, QUICK))
    assert caught.value is error
    assert inner.calls == 1


async def test_the_last_error_is_raised_when_every_attempt_failed() -> None:
    errors = [UpstreamError(f"try {n}", retryable=True) for n in range(3)]
    inner = Scripted(*(failing(e) for e in errors))
    with pytest.raises(UpstreamError) as caught:
        await collect(Retrying(inner, QUICK))
    assert caught.value is errors[-1]
    assert inner.calls == 3


async def test_retry_after_is_honoured() -> None:
    inner = Scripted(failing(UpstreamRateLimited("429", retryable=True, retry_after=0.2)), answering("ok"))
    start = time.monotonic()
    await collect(Retrying(inner, QUICK))
    assert time.monotonic() - start >= 0.2


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    policy = RetryPolicy(attempts=10, base_delay=0.5, max_delay=2.0)
    error = UpstreamError("x", retryable=True)
    for attempt, top in [(1, 0.5), (2, 1.0), (3, 2.0), (6, 2.0)]:
        delay = policy.delay(error, attempt)
        assert delay is not None
        assert top / 2 <= delay <= top
    assert policy.delay(error, 10) is None


async def test_closing_the_stream_closes_the_inner_call() -> None:
    gate = asyncio.Event()

    async def stalls() -> AsyncGenerator[ProviderEvent, None]:
        yield TextChunk("a")
        await gate.wait()
        yield TextChunk("never")

    inner = Scripted(stalls)
    events = Retrying(inner, QUICK).stream(REQUEST)
    assert await anext(events) == TextChunk("a")
    await events.aclose()
    assert inner.closed == 1


async def test_a_stop_during_the_pause_between_attempts_is_not_swallowed() -> None:
    inner = Scripted(failing(UpstreamError("503", retryable=True, retry_after=0.9)), answering("late"))
    task = asyncio.create_task(collect(Retrying(inner, QUICK)))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert inner.calls == 1
