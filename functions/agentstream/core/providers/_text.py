"""Text from JSON strings, made safe to stream: surrogate pairs split across two deltas are joined."""

from __future__ import annotations

import re

__all__ = ["pair_surrogates"]

_SURROGATE = re.compile("[\ud800-\udfff]")


def pair_surrogates(text: str) -> tuple[str, str]:
    """Text safe to send, and a trailing high surrogate to hold for the next chunk.

    JSON may escape a character outside the BMP as a surrogate pair (``"\\ud83d\\ude00"``), and a
    server may put the two halves in two chunks: joined here, they become the one real character.
    A surrogate that has no partner at all is not text: it becomes U+FFFD rather than break encoding.
    """
    if not _SURROGATE.search(text):
        return text, ""
    held = ""
    if "\ud800" <= text[-1] <= "\udbff":
        text, held = text[:-1], text[-1]
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace"), held
