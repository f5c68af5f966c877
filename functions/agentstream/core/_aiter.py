"""Pulling from an async iterator with a deadline per pull, without losing the item that was late."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

__all__ = ["Puller"]

T = TypeVar("T")


class Puller(Generic[T]):
    """``await pull(timeout)`` returns the next item, raises ``TimeoutError`` if none came in time.

    A pull that timed out keeps waiting in the background and its item is returned by the next pull,
    so nothing is lost or read twice. Each pull runs the source in a child task, so the source must not
    hold task-bound state (like ``asyncio.timeout``) across its own yields.
    """

    def __init__(self, source: AsyncIterator[T]) -> None:
        self._source = source
        self._pending: asyncio.Future[T] | None = None

    async def pull(self, timeout: float | None) -> T:  # noqa: ASYNC109 (a late item must survive)
        if self._pending is None:
            self._pending = asyncio.ensure_future(anext(self._source))
        if timeout is not None and timeout <= 0 and not self._pending.done():
            raise TimeoutError
        done, _ = await asyncio.wait({self._pending}, timeout=timeout)
        if not done:
            raise TimeoutError
        future, self._pending = self._pending, None
        return future.result()  # re-raises StopAsyncIteration and source errors

    def cancel(self) -> None:
        """Cancel a pull still under way without waiting (for synchronous clean-up paths)."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None

    async def aclose(self) -> None:
        """Cancel a pull still under way, then close the source (closing its upstream request)."""
        pending, self._pending = self._pending, None
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pending
        aclose = getattr(self._source, "aclose", None)
        if aclose is not None:
            await aclose()
