"""Many small calls made at about the same moment, sent as one batched DynamoDB request.

Every live run writes its log about once a second and checks for a cancel about as often. With a
hundred runs in one process that would be a couple of hundred boto3 calls a second, each costing a
millisecond or two of CPU under the GIL, right beside the streams. The recorders tick on aligned
instants (see ``core/recorder.py``), so their calls arrive together; a ``Combiner`` waits ``window``
seconds (1 ms: what arrives in the same turns of the event loop) after the first one and sends what has
gathered in batches of ``max_batch`` (BatchWriteItem: 25, BatchGetItem: 100). The same goes for the
agent reads, run records and final statuses of requests that arrive together. The capacity units are
the same; the requests and their CPU drop by that factor.

State is kept per event loop (futures belong to one loop). The batch runs in a context of its own, so
one caller's ``io_deadline`` does not cut the others short; each caller waits within its own.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from agentstream.core.control import io_deadline
from agentstream.errors import StoreUnavailable

__all__ = ["Combiner"]

T = TypeVar("T")
R = TypeVar("R")


class _LoopState(Generic[T, R]):
    def __init__(self) -> None:
        self.pending: list[tuple[T, asyncio.Future[R]]] = []
        self.task: asyncio.Task[None] | None = None


class Combiner(Generic[T, R]):
    def __init__(
        self,
        run_batch: Callable[[list[T]], Awaitable[list[R]]],
        *,
        max_batch: int,
        window: float = 0.001,
    ) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._window = window
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState[T, R]] = (
            weakref.WeakKeyDictionary()
        )

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            state = self._states[loop] = _LoopState()
        deadline = io_deadline.get()
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:  # before queueing: nothing goes out for a caller out of time
            raise StoreUnavailable("no time left for the data store before the deadline")
        future: asyncio.Future[R] = loop.create_future()
        future.add_done_callback(_retrieve)  # a caller that gave up waiting leaves no unread exception
        state.pending.append((item, future))
        if state.task is None:
            state.task = loop.create_task(self._drain(state), context=contextvars.Context())
        if left is None:
            return await asyncio.shield(future)
        try:
            async with asyncio.timeout(left):
                return await asyncio.shield(future)
        except TimeoutError as e:
            raise StoreUnavailable("the data store did not answer before the deadline") from e

    async def _drain(self, state: _LoopState[T, R]) -> None:
        await asyncio.sleep(self._window)
        pending, state.pending, state.task = state.pending, [], None
        for start in range(0, len(pending), self._max_batch):
            chunk = pending[start : start + self._max_batch]
            try:
                results = await self._run_batch([item for item, _ in chunk])
            except Exception as e:
                for _, future in chunk:
                    if not future.done():
                        future.set_exception(e)
                continue
            for (_, future), result in zip(chunk, results, strict=True):
                if not future.done():
                    future.set_result(result)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
