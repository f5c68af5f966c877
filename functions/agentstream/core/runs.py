"""A run in flight: the agent's events produced by their own task, read by whoever streams them.

The producer runs apart from the HTTP response so that a client disconnect can stop it cleanly (or,
with ``on_disconnect: continue``, let it finish), and so that a slow reader slows the producer down
(a bounded queue: backpressure reaches the upstream model connection instead of piling up in memory).
Every event is numbered (0, 1, 2, ...) and handed to the recorder, which keeps the run resumable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from agentstream.core.events import Done, Error, Event, TextDelta

if TYPE_CHECKING:
    from agentstream.core.recorder import RunRecorder

__all__ = ["RunHandle"]

logger = logging.getLogger(__name__)

_QUEUE_SIZE = 256
_END = None


class RunHandle:
    """Numbered events of one run, the last one always a ``Done`` (unless the task is cancelled)."""

    def __init__(
        self,
        run_id: str,
        session_id: str,
        events: AsyncIterator[Event],
        *,
        stop: asyncio.Event,
        recorder: RunRecorder | None = None,
    ) -> None:
        self.run_id = run_id
        self.session_id = session_id
        self.done: Done | None = None
        self._queue: asyncio.Queue[tuple[int, Event] | None] = asyncio.Queue(_QUEUE_SIZE)
        self._detached = False
        self._stop = stop
        self._recorder = recorder
        self._task = asyncio.ensure_future(self._produce(events))

    async def _produce(self, events: AsyncIterator[Event]) -> None:
        seq = 0
        text: list[str] = []

        async def emit(event: Event) -> None:
            nonlocal seq
            if isinstance(event, Done):
                self.done = event
            elif isinstance(event, TextDelta):
                text.append(event.text)
            if self._recorder is not None:
                self._recorder.add(seq, event)
            if not self._detached:
                await self._queue.put((seq, event))
            seq += 1

        try:
            try:
                async for event in events:
                    await emit(event)
            except Exception:
                # A bug below the agent loop (which ends every run with Done itself): the reader still
                # gets an error and exactly one Done, never a stream that stops or hangs.
                logger.exception("run %s failed", self.run_id)
                if self.done is None:
                    await emit(Error("internal error while running the agent", "internal_error"))
                    await emit(Done(status="error", final_response="".join(text), total_steps=0))
        except asyncio.CancelledError:
            logger.info("run %s cancelled after %d events", self.run_id, seq)
            # A cancelled run has lost its reader; tell one that is left, if there is room.
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(_END)
            raise
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
            if self._recorder is not None:
                await self._recorder.close(self.done)
        if not self._detached:
            await self._queue.put(_END)

    async def events(self) -> AsyncIterator[tuple[int, Event]]:
        """The numbered events as they come, until the last one. For one reader."""
        while (item := await self._queue.get()) is not _END:
            yield item

    def stop(self) -> None:
        """Ask the run to end now: it closes the upstream request and ends with ``Done`` ``cancelled``."""
        self._stop.set()

    def cancel(self) -> None:
        """Cancel the producer task outright (nothing more is produced, not even ``Done``)."""
        self._task.cancel()

    def detach(self) -> None:
        """Nobody reads any more: the run goes on (or stops) without queueing its events."""
        self._detached = True
        while not self._queue.empty():
            self._queue.get_nowait()

    def on_finished(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` once the producer has ended, whatever the way."""
        self._task.add_done_callback(lambda _: callback())

    @property
    def finished(self) -> bool:
        return self._task.done()

    async def wait(self) -> None:
        """Until the producer has ended (tests, graceful shutdown)."""
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(self._task)
