"""A run in flight: the agent's events produced by their own task, read by whoever streams them.

The producer runs apart from the HTTP response so that a client disconnect can cancel it cleanly (or,
with ``on_disconnect: continue``, let it finish), and so that a slow reader slows the producer down
(a bounded queue: backpressure reaches the upstream model connection instead of piling up in memory).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from agentstream.core.events import Done, Event

__all__ = ["RunHandle"]

logger = logging.getLogger(__name__)

_QUEUE_SIZE = 256
_END = None


class RunHandle:
    """Numbered events of one run (sequence 0, 1, 2, ...), the last one always a ``Done``."""

    def __init__(
        self,
        run_id: str,
        session_id: str,
        events: AsyncIterator[Event],
        *,
        on_cancel: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.run_id = run_id
        self.session_id = session_id
        self._queue: asyncio.Queue[tuple[int, Event] | None] = asyncio.Queue(_QUEUE_SIZE)
        self._detached = False
        self._on_cancel = on_cancel
        self.done: Done | None = None
        self._task = asyncio.ensure_future(self._produce(events))

    async def _produce(self, events: AsyncIterator[Event]) -> None:
        seq = 0
        try:
            async for event in events:
                if isinstance(event, Done):
                    self.done = event
                if not self._detached:
                    await self._queue.put((seq, event))
                seq += 1
        except asyncio.CancelledError:
            logger.info("run %s cancelled after %d events", self.run_id, seq)
            if self._on_cancel is not None:
                with contextlib.suppress(Exception):
                    await self._on_cancel()
            # Cancelled runs have lost their reader; tell one that is left, if there is room.
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(_END)
            raise
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
        if not self._detached:
            await self._queue.put(_END)

    async def events(self) -> AsyncIterator[tuple[int, Event]]:
        """The numbered events as they come, until the last one. For one reader."""
        while (item := await self._queue.get()) is not _END:
            yield item

    def cancel(self) -> None:
        """Stop the run now (client gone): the upstream request is closed by the cancellation."""
        self._task.cancel()

    def detach(self) -> None:
        """Let the run finish on its own with nobody reading (``on_disconnect: continue``)."""
        self._detached = True
        while not self._queue.empty():
            self._queue.get_nowait()

    @property
    def finished(self) -> bool:
        return self._task.done()

    async def wait(self) -> None:
        """Until the producer has ended (tests, graceful shutdown)."""
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(self._task)
