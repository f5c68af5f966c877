"""Keeps a run resumable and stoppable from anywhere: the run log writer and the cancel heartbeat.

One background task per run does both, on one clock. Its ticks fall on multiples of the period (of
the monotonic clock), the same instants for every run in the process, so the store can send the
writes and reads of many runs as one batched request (``store/_combine.py``).

- Events are buffered (their JSON is made once, by the run) and written as one batch about every
  ``flush_seconds``, or sooner when ``max_batch_chars`` are waiting: one idempotent write per batch,
  never one per token, and nothing else on the hot path. Batches are written strictly in order; a batch
  that failed stays first in line and is retried (as it was: same first id, same content, so a write
  that did land is never doubled) before anything newer. The log is therefore always a gap-free
  prefix of the run.
- Every ``heartbeat_seconds`` one cheap read asks whether someone cancelled the run
  (``POST /runs/{id}/cancel`` on any instance), whatever the run is doing: waiting for its first
  token, in a tool, on a stalled upstream. Then ``on_cancel`` is called.

``close()`` writes what is left and the final status; if some batch still cannot be written the run
is marked ``log_complete: false`` and a replay ends with an error instead of a silent hole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from agentstream.errors import AgentStreamError

if TYPE_CHECKING:
    from agentstream.core.events import Done
    from agentstream.core.ports import RunLog

__all__ = ["RunRecorder"]

logger = logging.getLogger(__name__)

# Retries of the batches still unwritten when the run ends (each after a short pause).
_CLOSE_ATTEMPTS = 3


class RunRecorder:
    def __init__(
        self,
        log: RunLog,
        tenant: str,
        run_id: str,
        *,
        on_cancel: Callable[[], None],
        flush_seconds: float = 1.0,
        heartbeat_seconds: float = 0.8,
        max_batch_chars: int = 64_000,
    ) -> None:
        self._log = log
        self._tenant = tenant
        self._run_id = run_id
        self._on_cancel = on_cancel
        self._flush_seconds = flush_seconds
        self._heartbeat_seconds = heartbeat_seconds
        self._max_batch_chars = max_batch_chars
        self._buffer: list[str] = []  # "[seq,<event json>]" of events not yet cut into a batch
        self._first = 0  # sequence number of the buffer's first event
        self._chars = 0
        self._last_seq = -1
        self._pending: deque[tuple[int, str]] = deque()  # cut batches not yet written, oldest first
        self._cancel_seen = False
        self._closing = False
        self._wake: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the background task (the heartbeat runs from the run's first moment)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def add(self, seq: int, data: str) -> None:
        if not self._buffer:
            self._first = seq
        self._buffer.append(f"[{seq},{data}]")
        self._last_seq = seq
        self._chars += len(data)
        if self._chars >= self._max_batch_chars:
            self._poke()

    def _poke(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _cut(self) -> None:
        if self._buffer:
            self._pending.append((self._first, "[" + ",".join(self._buffer) + "]"))
            self._buffer = []
            self._chars = 0

    async def _write_pending(self) -> bool:
        """Write the pending batches in order; stop at the first failure (it stays first in line)."""
        while self._pending:
            first, data = self._pending[0]
            try:
                await self._log.append(self._tenant, self._run_id, first, data)
            except AgentStreamError as e:
                logger.warning(
                    "run %s: events from %d not recorded yet (will retry): %s", self._run_id, first, e.message
                )
                return False
            self._pending.popleft()
        return True

    async def _heartbeat(self) -> None:
        try:
            cancelled = await self._log.cancel_requested(self._tenant, self._run_id)
        except AgentStreamError as e:
            logger.warning("run %s: cancel check failed: %s", self._run_id, e.message)
            return
        if cancelled and not self._cancel_seen:
            self._cancel_seen = True
            self._on_cancel()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        next_flush = _aligned(now + self._flush_seconds / 2, self._flush_seconds)
        next_beat = _aligned(now + self._heartbeat_seconds / 2, self._heartbeat_seconds)
        while not self._closing:
            wait = min(next_flush, next_beat) - time.monotonic()
            if wait > 0:
                self._wake = loop.create_future()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake
                self._wake = None
            if self._closing:
                return
            now = time.monotonic()
            if now >= next_flush or self._chars >= self._max_batch_chars:
                self._cut()
                await self._write_pending()
                next_flush = _aligned(time.monotonic(), self._flush_seconds)
            if not self._cancel_seen and now >= next_beat:
                await self._heartbeat()
                next_beat = _aligned(time.monotonic(), self._heartbeat_seconds)

    async def close(self, done: Done | None) -> None:
        """Write what is left and the run's final status (``cancelled`` when it never finished)."""
        self._closing = True
        self._poke()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        self._cut()
        complete = await self._write_pending()
        for attempt in range(1, _CLOSE_ATTEMPTS):
            if complete:
                break
            await asyncio.sleep(0.2 * attempt)
            complete = await self._write_pending()
        if not complete:
            logger.error(
                "run %s: the run log is incomplete (events from %d lost)", self._run_id, self._pending[0][0]
            )
        try:
            await self._log.finish(
                self._tenant,
                self._run_id,
                status=done.status if done is not None else "cancelled",
                usage=done.usage.to_dict() if done is not None else {},
                metrics=dict(done.metrics) if done is not None else {},
                last_seq=self._last_seq,
                log_complete=complete,
            )
        except AgentStreamError as e:
            logger.warning("run %s: final status not recorded: %s", self._run_id, e.message)


def _aligned(now: float, period: float) -> float:
    """The first multiple of ``period`` after ``now``: every run of the process ticks together."""
    return (math.floor(now / period) + 1) * period
