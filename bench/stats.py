"""Small statistics the figures need: medians, nearest-rank percentiles, sequential round trips."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence

__all__ = ["median", "percentile", "sequential_trips"]


def median(values: Iterable[float]) -> float:
    data = list(values)
    return statistics.median(data) if data else math.nan


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100): a value that was measured, never an interpolation."""
    data = sorted(values)
    if not data:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(data)))
    return data[min(rank, len(data)) - 1]


def sequential_trips(intervals: Sequence[tuple[float, float]]) -> int:
    """How many round trips had to happen one after another: the longest chain of (start, end) intervals
    where each starts after the previous one ended. Overlapping calls ran in parallel and count once."""
    count = 0
    last_end = -math.inf
    for start, end in sorted(intervals, key=lambda iv: iv[1]):
        if start >= last_end:
            count += 1
            last_end = end
    return count
