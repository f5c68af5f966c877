"""One run's clock and stop switch: its deadline and its cancel request, as one cancel scope.

The run's producer enters ``guard()`` around everything that waits on the outside world (a model
stream, a tool). The guard is an ``asyncio.timeout_at`` on the run's deadline; ``stop()`` moves that
timeout to *now*. So a deadline or a cancel request interrupts whatever the producer awaits at once,
with no task, future or timer per streamed item: the cost is one timer per guarded section.

The idle limit works the same way: the producer calls ``alive()`` for each item the model sends (one
clock read); one watcher per guarded section looks at that time when the limit could have passed,
and sets itself again, or moves the timeout to now (``IdleTimeout``, a ``DeadlineReached``).
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

__all__ = ["DeadlineReached", "IdleTimeout", "Interrupted", "RunControl", "io_deadline"]

# time.monotonic() by which I/O done for the current request must have answered (None: no limit).
# Set by whoever knows the invocation's deadline; the store bounds its calls by it, so retries and
# slow answers can never outlive the Lambda invocation that waits for them.
io_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("io_deadline", default=None)


class Interrupted(Exception):
    """The run was asked to stop (cancel request, client gone)."""


class DeadlineReached(Exception):
    """The run's deadline passed."""


class IdleTimeout(DeadlineReached):
    """Nothing came from the model (or the tool) for the idle limit."""


class RunControl:
    def __init__(self, deadline: float | None = None, *, idle_seconds: float | None = None) -> None:
        # time.monotonic() by which the run must have ended (None: no limit)
        self.deadline = deadline
        # longest wait inside a guarded section without a sign of life (None: no limit)
        self.idle_seconds = idle_seconds
        self.stopped = False
        self._timeout: asyncio.Timeout | None = None
        self._alive_at = 0.0  # time.monotonic() of the last sign of life in the guarded section
        self._idle_watch: asyncio.TimerHandle | None = None
        self._idled = False
        self._behind: Callable[[], bool] = _never
        self._catch_up: Callable[[], Awaitable[None]] = _nothing

    def bind_reader(self, behind: Callable[[], bool], catch_up: Callable[[], Awaitable[None]]) -> None:
        """Backpressure: ``behind()`` says the reader lags; ``catch_up()`` waits until it has read."""
        self._behind = behind
        self._catch_up = catch_up

    def behind(self) -> bool:
        return self._behind()

    async def catch_up(self) -> None:
        """Wait (inside ``guard()``, so a stop or the deadline still interrupt) for a slow reader."""
        await self._catch_up()

    def stop(self) -> None:
        """Ask the run to stop: a guarded wait in progress is interrupted now, later ones at once."""
        self.stopped = True
        if self._timeout is not None and not self._timeout.expired():
            self._timeout.reschedule(asyncio.get_running_loop().time())

    def alive(self) -> None:
        """The model (or the tool) sent something: the idle limit counts from now."""
        self._alive_at = time.monotonic()

    def _watch_idle(self) -> None:
        """Called when the idle limit could have passed: it did, or look again when it could."""
        self._idle_watch = None
        timeout, idle = self._timeout, self.idle_seconds
        if timeout is None or idle is None or timeout.expired():
            return
        loop = asyncio.get_running_loop()
        left = self._alive_at + idle - time.monotonic()
        if left > 0.001:
            self._idle_watch = loop.call_later(left, self._watch_idle)
            return
        self._idled = True
        timeout.reschedule(loop.time())

    def remaining(self) -> float | None:
        """Seconds left before the deadline (never negative), None without one."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def check(self) -> None:
        """Raise ``Interrupted`` / ``DeadlineReached`` if the run must not go on."""
        if self.stopped:
            raise Interrupted
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise DeadlineReached

    @asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """Run the block until it ends, the deadline passes (``DeadlineReached``), nothing comes for
        the idle limit (``IdleTimeout``) or ``stop()`` (``Interrupted``). Not reentrant: the producer
        guards one wait at a time."""
        self.check()
        loop = asyncio.get_running_loop()
        when = None if self.deadline is None else loop.time() + (self.deadline - time.monotonic())
        timeout = asyncio.timeout_at(when)
        try:
            async with timeout:
                self._timeout = timeout
                if self.idle_seconds is not None:
                    self._alive_at = time.monotonic()
                    self._idle_watch = loop.call_later(self.idle_seconds, self._watch_idle)
                yield
        except TimeoutError:
            if not timeout.expired():
                raise  # the block's own TimeoutError, not ours
            if self.stopped:
                raise Interrupted from None
            if self._idled:
                raise IdleTimeout from None
            raise DeadlineReached from None
        finally:
            self._timeout = None
            if self._idle_watch is not None:
                self._idle_watch.cancel()
                self._idle_watch = None


def _never() -> bool:
    return False


async def _nothing() -> None:
    return None
