"""A run in flight: one producer task, one bounded outbox, one reader.

The producer task iterates the agent loop (which reads the model stream in this same task: no pump
task, no queue and no future per item), numbers each event (0, 1, 2, ...), encodes it to JSON once
(the stream and the run log share that text), regroups text into ``chunk_size`` pieces, and appends
it to the outbox. The reader (an HTTP response) takes *everything that is ready* in one call, so a
burst of events leaves in one write. When the outbox is full the agent loop waits for the reader
(``RunControl.catch_up``, inside its guard): backpressure reaches the model connection instead of
piling up in memory. The producer itself never awaits between two events, so every wait of the run's
task is inside the agent loop's guard, where a stop request or the deadline interrupts it.

After ``Done`` the reader is told at once (``done`` first); the producer then finishes the run's
book-keeping (the run log's last flush and final status, the conversation turn) within a time budget,
and ``wait()`` returns once that is over. A reader that leaves ``detach()``es: the run goes on (or is
stopped) without queueing anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from agentstream.core.chunking import Regrouper
from agentstream.core.control import RunControl
from agentstream.core.events import Done, Error, Event, TextDelta, event_json
from agentstream.core.telemetry import NO_OBSERVER, RunObserver

if TYPE_CHECKING:
    from agentstream.core.recorder import RunRecorder

__all__ = ["Item", "RunHandle"]

logger = logging.getLogger(__name__)

# (sequence number, event, its JSON): what the outbox holds and the reader takes
Item = tuple[int, Event, str]
AfterDone = Callable[[Done], Awaitable[None]]

_OUTBOX_LIMIT = 256
# Book-keeping after Done never takes longer than this (nor past ``finish_by``).
_AFTER_DONE_SECONDS = 10.0


class RunHandle:
    """Numbered events of one run, the last one always a ``Done`` (unless the task is cancelled)."""

    def __init__(
        self,
        run_id: str,
        session_id: str,
        events: AsyncIterator[Event],
        *,
        control: RunControl | None = None,
        recorder: RunRecorder | None = None,
        chunk_size: int = 0,
        flush_seconds: float = 0.05,
        finalize: Callable[[Done], Done] | None = None,
        after_done: AfterDone | None = None,
        finish_by: float | None = None,
        outbox_limit: int = _OUTBOX_LIMIT,
        observer: RunObserver = NO_OBSERVER,
    ) -> None:
        self.run_id = run_id
        self.session_id = session_id
        self.control = control or RunControl()
        self.done: Done | None = None
        self._recorder = recorder
        self._finalize = finalize
        self._after_done = after_done
        self._finish_by = finish_by
        self._observer = observer
        self._regroup = Regrouper(chunk_size) if chunk_size > 0 else None
        self._flush_seconds = flush_seconds
        self._flush_timer: asyncio.TimerHandle | None = None
        self._outbox: deque[Item] = deque()
        self._limit = outbox_limit
        self._seq = 0
        self._text: list[str] = []
        self._ended = False  # no more items will come
        self._detached = False  # nobody reads any more
        self._reader: asyncio.Future[None] | None = None  # the reader waiting for items
        self._room: asyncio.Future[None] | None = None  # the producer waiting for the reader
        self._loop = asyncio.get_running_loop()
        self.control.bind_reader(self._behind, self._wait_for_room)
        self._task = self._loop.create_task(self._produce(events))

    # --- producer side -------------------------------------------------------------------------

    def _emit(self, event: Event) -> None:
        seq = self._seq
        self._seq = seq + 1
        data = event_json(event)
        if self._recorder is not None:
            self._recorder.add(seq, data)
        if not self._detached:
            self._outbox.append((seq, event, data))
            self._wake_reader()

    def _emit_text(self, text: str) -> None:
        self._text.append(text)
        self._emit(TextDelta(text))

    def _feed(self, event: Event) -> None:
        regroup = self._regroup
        if regroup is None:
            if type(event) is TextDelta:
                self._text.append(event.text)
            self._emit(event)
            return
        if type(event) is TextDelta:
            for piece in regroup.feed(event.text):
                self._emit_text(piece)
            if regroup.held and self._flush_timer is None:
                self._flush_timer = self._loop.call_later(self._flush_seconds, self._flush_held)
            elif not regroup.held and self._flush_timer is not None:
                self._flush_timer.cancel()
                self._flush_timer = None
            return
        self._flush_held()
        self._emit(event)

    def _flush_held(self) -> None:
        """Send held text now (the flush interval is over, or another event comes)."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._regroup is not None and (held := self._regroup.flush()):
            self._emit_text(held)

    async def _produce(self, events: AsyncIterator[Event]) -> None:
        try:
            try:
                async for event in events:
                    if type(event) is Done:
                        self._flush_held()
                        if self._finalize is not None:
                            event = self._finalize(event)
                        self.done = event
                        self._emit(event)
                        break
                    self._feed(event)
            except Exception:
                # A bug below the agent loop (which ends every run with Done itself): the reader still
                # gets an error and exactly one Done, never a stream that stops or hangs.
                logger.exception("run %s failed", self.run_id)
            finally:
                aclose = getattr(events, "aclose", None)
                if aclose is not None:
                    with contextlib.suppress(Exception):
                        await aclose()
            if self.done is None:
                self._flush_held()
                self._emit(Error("internal error while running the agent", "internal_error"))
                self.done = Done(
                    status="error",
                    final_response="".join(self._text),
                    total_steps=0,
                    error_code="internal_error",
                )
                self._emit(self.done)
        except asyncio.CancelledError:
            logger.info("run %s cancelled after %d events", self.run_id, self._seq)
            raise
        finally:
            if self._flush_timer is not None:
                self._flush_timer.cancel()
            self._ended = True
            self._wake_reader()
            await self._finish()

    async def _finish(self) -> None:
        """The run log's last write and final status, the after-done hook and the telemetry's flush,
        side by side within the budget."""
        try:
            self._observer.run_ended(self.done)
        except Exception:
            logger.exception("run %s: telemetry failed", self.run_id)
        budget = _AFTER_DONE_SECONDS
        if self._finish_by is not None:
            budget = max(0.0, min(budget, self._finish_by - time.monotonic()))

        async def after_done() -> None:
            if self._after_done is not None and self.done is not None:
                try:
                    await self._after_done(self.done)
                except Exception:
                    logger.exception("run %s: the work after done failed", self.run_id)

        async def close_log() -> None:
            if self._recorder is not None:
                try:
                    await self._recorder.close(self.done)
                except Exception:
                    logger.exception("run %s: the run log could not be closed", self.run_id)

        async def flush() -> None:
            try:
                await self._observer.flush()
            except Exception:
                logger.exception("run %s: telemetry could not be flushed", self.run_id)

        try:
            async with asyncio.timeout(budget):
                # side by side: a slow history write must not keep the run's final status unwritten
                await asyncio.gather(after_done(), close_log(), flush())
        except TimeoutError:
            logger.warning("run %s: book-keeping after done ran out of time (%.1f s)", self.run_id, budget)

    def _behind(self) -> bool:
        return len(self._outbox) >= self._limit and not self._detached

    async def _wait_for_room(self) -> None:
        while len(self._outbox) >= self._limit and not self._detached:
            self._room = self._loop.create_future()
            try:
                await self._room
            finally:
                self._room = None

    def _wake_reader(self) -> None:
        reader = self._reader
        if reader is not None and not reader.done():
            reader.set_result(None)

    # --- reader side ---------------------------------------------------------------------------

    async def take(self) -> list[Item] | None:
        """Every item ready now (waiting for at least one); ``[]`` when woken by ``wake()`` with
        nothing new; ``None`` once the run has ended and everything was taken, or after ``detach()``."""
        if not self._outbox:
            if self._ended or self._detached:
                return None
            self._reader = self._loop.create_future()
            try:
                await self._reader
            finally:
                self._reader = None
            if not self._outbox:
                return None if self._ended or self._detached else []
        items = list(self._outbox)
        self._outbox.clear()
        room = self._room
        if room is not None and not room.done():
            room.set_result(None)
        return items

    def wake(self) -> None:
        """Make a waiting ``take()`` return (with ``[]`` if nothing came): keep-alive pings."""
        self._wake_reader()

    async def events(self) -> AsyncIterator[tuple[int, Event]]:
        """The numbered events as they come, until the last one. For one reader."""
        while (items := await self.take()) is not None:
            for seq, event, _ in items:
                yield seq, event

    def stop(self) -> None:
        """Ask the run to end now: it closes the upstream request and ends with ``Done`` ``cancelled``."""
        self.control.stop()

    def cancel(self) -> None:
        """Cancel the producer task outright (nothing more is produced, not even ``Done``)."""
        self._task.cancel()

    def detach(self) -> None:
        """Nobody reads any more: the run goes on (or stops) without queueing its events."""
        self._detached = True
        self._outbox.clear()
        self._wake_reader()
        room = self._room
        if room is not None and not room.done():
            room.set_result(None)

    def on_finished(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` once the producer has ended, whatever the way."""
        self._task.add_done_callback(lambda _: callback())

    @property
    def finished(self) -> bool:
        """True once the producer and its book-keeping are over."""
        return self._task.done()

    @property
    def ended(self) -> bool:
        """True once ``Done`` (or the end) is in the outbox: nothing more will be produced."""
        return self._ended

    async def wait(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Until the producer and its book-keeping have ended (or ``timeout`` seconds passed)."""
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._task)
