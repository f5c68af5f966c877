"""Regrouping streamed text into ``content`` pieces of at most N characters.

``chunk_size`` 0 passes every model delta through as it came. Otherwise text is cut into pieces of at
most ``chunk_size`` code points; a piece shorter than that is held back at most ``flush_seconds`` (it
is sent as soon as the next non-text event or the end arrives, or when the flush interval is over),
so grouping never delays text more than a short interval. Cuts avoid separating a base character from
the marks that modify it (combining marks, variation selectors, skin-tone modifiers, zero-width joiner
sequences) when the piece can be shortened instead. Text is never altered: the pieces concatenate to
exactly the text that came in.
"""

from __future__ import annotations

import unicodedata

__all__ = ["Regrouper", "split_text"]

_ZWJ = "\u200d"


def _is_extender(ch: str) -> bool:
    """True for code points that attach to the one before them."""
    cp = ord(ch)
    return (
        ch == _ZWJ
        or unicodedata.combining(ch) != 0
        or unicodedata.category(ch) in ("Mn", "Me", "Mc")
        or 0xFE00 <= cp <= 0xFE0F  # variation selectors
        or 0x1F3FB <= cp <= 0x1F3FF  # emoji skin-tone modifiers
        or 0xE0020 <= cp <= 0xE007F  # emoji tag sequences
    )


def _cut_point(text: str, limit: int) -> int:
    """Largest cut <= limit that does not split a character from its modifiers (limit if impossible)."""
    cut = limit
    while cut > 0 and (_is_extender(text[cut]) or text[cut - 1] == _ZWJ):
        cut -= 1
    return cut if cut > 0 else limit


def split_text(text: str, size: int) -> tuple[list[str], str]:
    """Cut ``text`` into full pieces of at most ``size``; return them and the short remainder."""
    pieces: list[str] = []
    while len(text) > size:
        cut = _cut_point(text, size)
        pieces.append(text[:cut])
        text = text[cut:]
    if len(text) == size:
        pieces.append(text)
        text = ""
    return pieces, text


class Regrouper:
    """Cuts streamed text into pieces of at most ``size`` characters, keeping a short remainder.

    Synchronous and allocation-light: the run's producer feeds it every text delta and owns the timer
    that flushes a held remainder (see ``core/runs.py``), so no task or queue sits between the model
    and the client for chunking.
    """

    __slots__ = ("held", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.held = ""

    def feed(self, text: str) -> list[str]:
        """The full pieces that ``text`` completes; a shorter rest stays ``held``."""
        pieces, self.held = split_text(self.held + text, self.size)
        return pieces

    def flush(self) -> str:
        """The held remainder (possibly empty), which is then forgotten."""
        held, self.held = self.held, ""
        return held
