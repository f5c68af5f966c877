"""Retrying a model call, with backoff, only while nothing of it has been streamed.

Every provider is wrapped in ``Retrying`` by the registry. A call that fails with a retryable
``UpstreamError`` (throttling, overload, a 5xx, a connection that broke) before it yielded anything is
made again after a pause: the upstream's ``Retry-After`` when it gave one, else an exponential backoff
with jitter. Once an event has gone out, a failure is final: the text already streamed stays what the
user saw (the agent loop keeps it in ``final_response``), never repeated or changed by a second answer.

Pauses are plain ``asyncio.sleep``: inside the run's guard, a stop or the deadline interrupts them.
A ``Retry-After`` longer than ``max_delay`` is not waited for: the error goes to the user at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agentstream.errors import UpstreamError

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from agentstream.core.providers.base import ModelProvider, ModelRequest, ProviderEvent

__all__ = ["RetryPolicy", "Retrying"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 3  # calls in all, the first one included (1: never retry)
    base_delay: float = 0.5  # seconds before the second call; doubled for each further one
    max_delay: float = 8.0  # longest pause, and the longest Retry-After that is honoured

    def delay(self, error: UpstreamError, attempt: int) -> float | None:
        """Seconds to wait before call ``attempt + 1`` after ``error``; None: do not try again."""
        if not error.retryable or attempt >= self.attempts:
            return None
        if error.retry_after is not None:
            return error.retry_after if error.retry_after <= self.max_delay else None
        backoff = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return backoff * random.uniform(0.5, 1.0)  # jitter: retries of many runs spread out


class Retrying:
    """``inner``, with its calls retried per ``policy`` while they have streamed nothing."""

    def __init__(self, inner: ModelProvider, policy: RetryPolicy) -> None:
        self.inner = inner
        self.policy = policy

    async def stream(self, request: ModelRequest) -> AsyncGenerator[ProviderEvent, None]:
        attempt = 1
        while True:
            streamed = False
            events = self.inner.stream(request)
            try:
                async for event in events:
                    streamed = True
                    yield event
                return
            except UpstreamError as error:
                delay = None if streamed else self.policy.delay(error, attempt)
                if delay is None:
                    raise
                logger.warning(
                    "model call failed (%s: %s); attempt %d of %d in %.2f s",
                    error.code,
                    error.message,
                    attempt + 1,
                    self.policy.attempts,
                    delay,
                )
            finally:
                # closing this generator (or a failure) closes the inner call, and so its connection
                aclose = getattr(events, "aclose", None)
                if aclose is not None:
                    await aclose()
            await asyncio.sleep(delay)
            attempt += 1
