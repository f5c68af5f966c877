"""Keeps a run resumable: its numbered events are written to the run log in batches, off the hot path.

Events are buffered and written by a background task every ``interval`` seconds or as soon as
``batch_size`` events are waiting, never one write per token. A write also tells whether someone asked
to cancel the run (``POST /runs/{id}/cancel`` from any instance): then ``on_cancel`` is called.
A failing store never breaks the live stream: the failure is logged and the stream goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agentstream.core.events import Done, Event, event_to_dict
from agentstream.errors import AgentStreamError

if TYPE_CHECKING:
    from agentstream.store.runs import RunRepository

__all__ = ["RunRecorder"]

logger = logging.getLogger(__name__)


class RunRecorder:
    def __init__(
        self,
        runs: RunRepository,
        tenant: str,
        run_id: str,
        *,
        on_cancel: Callable[[], None],
        interval: float = 0.25,
        batch_size: int = 25,
    ) -> None:
        self._runs = runs
        self._tenant = tenant
        self._run_id = run_id
        self._on_cancel = on_cancel
        self._interval = interval
        self._batch_size = batch_size
        self._buffer: list[tuple[int, dict[str, Any]]] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def add(self, seq: int, event: Event) -> None:
        self._buffer.append((seq, event_to_dict(event)))
        if self._task is None:
            self._task = asyncio.ensure_future(self._flush_loop())
        if len(self._buffer) >= self._batch_size:
            self._wake.set()

    async def _flush_loop(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            await self._flush()

    async def _flush(self) -> None:
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        try:
            cancel_requested = await self._runs.append(self._tenant, self._run_id, batch)
        except AgentStreamError as e:
            logger.warning("run %s: %d events not recorded: %s", self._run_id, len(batch), e.message)
            return
        if cancel_requested:
            self._on_cancel()

    async def close(self, done: Done | None) -> None:
        """Write what is left and the run's final status (``cancelled`` when it never finished)."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        await self._flush()
        try:
            await self._runs.finish(
                self._tenant,
                self._run_id,
                status=done.status if done is not None else "cancelled",
                usage=done.usage.to_dict() if done is not None else {},
                metrics=dict(done.metrics) if done is not None else {},
            )
        except AgentStreamError as e:
            logger.warning("run %s: final status not recorded: %s", self._run_id, e.message)
