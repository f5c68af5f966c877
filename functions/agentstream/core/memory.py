"""Long-term memory in the prompt: which remembered facts go with a message."""

from __future__ import annotations

import re

from agentstream.core.ports import MemoryItem

__all__ = ["relevant"]

_WORD = re.compile(r"\w+", re.UNICODE)


def relevant(items: list[MemoryItem], message: str, limit: int = 20) -> list[MemoryItem]:
    """The items to put in the prompt: those sharing the most words with the message, then the newest."""
    if len(items) <= limit:
        return items
    words = {w.lower() for w in _WORD.findall(message)}
    ranked = sorted(
        items,
        key=lambda m: (len(words & {w.lower() for w in _WORD.findall(m.content)}), m.id),
        reverse=True,
    )
    chosen = {m.id for m in ranked[:limit]}
    return [m for m in items if m.id in chosen]
