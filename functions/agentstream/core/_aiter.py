"""Reading an async iterator with a timeout and an interrupt, without losing an item that came late.

A ``Pump`` iterates its source in one task of its own and hands items over through a small queue.
Keeping the whole iteration in one task matters: libraries such as httpx/anyio tie cancel scopes to
the task that entered them, so a provider stream must not be advanced from a new task per item.
The queue holds ``ahead`` items at most, so a slow reader slows the source down (backpressure).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Generic, TypeVar

__all__ = ["Interrupted", "Pump"]

T = TypeVar("T")


class Interrupted(Exception):
    """The interrupt event was set before the next item came."""


class Pump(Generic[T]):
    def __init__(self, source: AsyncIterator[T], *, ahead: int = 1) -> None:
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(ahead)
        self._getter: asyncio.Future[tuple[str, Any]] | None = None
        self._finished = False
        self._task = asyncio.ensure_future(self._run(source))

    async def _run(self, source: AsyncIterator[T]) -> None:
        try:
            async for item in source:
                await self._queue.put(("item", item))
            await self._queue.put(("end", None))
        except Exception as e:
            await self._queue.put(("error", e))
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()

    async def get(self, timeout: float | None = None, interrupt: asyncio.Event | None = None) -> T:  # noqa: ASYNC109
        """The next item. Raises ``StopAsyncIteration`` at the end, the source's own errors,
        ``TimeoutError`` after ``timeout`` seconds and ``Interrupted`` once ``interrupt`` is set;
        after a timeout or an interrupt, the item on its way is kept for the next call."""
        if self._finished:
            raise StopAsyncIteration
        if interrupt is not None and interrupt.is_set():
            raise Interrupted
        if self._getter is None:
            self._getter = asyncio.ensure_future(self._queue.get())
        getter = self._getter
        waiters: set[asyncio.Future[Any]] = {getter}
        stop = None if interrupt is None else asyncio.ensure_future(interrupt.wait())
        if stop is not None:
            waiters.add(stop)
        try:
            if timeout is None or timeout > 0:
                await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if stop is not None:
                stop.cancel()
        if not getter.done():
            if interrupt is not None and interrupt.is_set():
                raise Interrupted
            raise TimeoutError
        self._getter = None
        kind, value = getter.result()
        if kind == "item":
            return value  # type: ignore[no-any-return]
        self._finished = True
        if kind == "error":
            raise value
        raise StopAsyncIteration

    def cancel(self) -> None:
        """Stop the source now, without waiting (for synchronous clean-up paths)."""
        if self._getter is not None:
            self._getter.cancel()
        self._task.cancel()
        self._finished = True

    async def aclose(self) -> None:
        """Stop the source and wait until it has closed (its upstream request with it)."""
        self.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
