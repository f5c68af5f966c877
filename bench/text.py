"""The text every streamer in the bench sends, so that ours and the baselines write the same frames.

``pieces(n, chars)`` is a reply cut into ``n`` deltas of ``chars`` characters: mostly English words with
some Chinese and an emoji, like a real model's output. The fake upstream, the scripted provider's
``reply`` option and the floor app all use it, so every ``content`` frame has the same shape and size.
``CJK_TOKENS`` are the seed bench's tokens (Chinese, emoji, a ZWJ family) for the TTFB / lost-characters
figure, where a byte-splitting baseline breaks characters.
"""

from __future__ import annotations

import itertools

__all__ = ["CJK_TOKENS", "cjk_pieces", "pieces", "reply"]

_WORDS = (
    "Streaming ", "tokens ", "arrive ", "one ", "by ", "one, ", "流式", "输出 ", "and ", "every ",
    "delta ", "leaves ", "as ", "soon ", "as ", "it ", "comes 🙂 ", "from ", "the ", "model. ",
)  # fmt: skip

CJK_TOKENS = ["你好", "，", "这是", "一个", "流式", "回答", "🙂", "，",
              "包含", "表情", "👨‍👩‍👧", "和", "中文", "。"]  # fmt: skip


def reply(n: int, chars: int) -> str:
    """A text of exactly ``n * chars`` characters."""
    size = n * chars
    out: list[str] = []
    length = 0
    for word in itertools.cycle(_WORDS):
        out.append(word)
        length += len(word)
        if length >= size:
            break
    return "".join(out)[:size]


def pieces(n: int, chars: int) -> list[str]:
    """``reply(n, chars)`` cut into ``n`` deltas of ``chars`` characters (what the scripted provider does)."""
    text = reply(n, chars)
    return [text[i : i + chars] for i in range(0, len(text), chars)]


def cjk_pieces(n: int) -> list[str]:
    return [CJK_TOKENS[i % len(CJK_TOKENS)] for i in range(n)]
