"""Leak scans: the secrets a test configured, and everything it produced, searched for each of them.

``Secrets.add`` takes a secret (its percent-encoded forms are looked for too), ``saw`` a response body,
an SSE stream, a log line or a stored item, and ``leaks()`` lists every secret found, with where and
what surrounds it. See tests/functional/test_leak_scan.py.
"""

from __future__ import annotations

from urllib.parse import quote

__all__ = ["Secrets"]


class Secrets:
    """Every secret of a test, and what it produced; ``leaks()`` says which secret showed where."""

    def __init__(self) -> None:
        self.values: set[str] = set()
        self.produced: list[tuple[str, str]] = []  # (where, text)

    def add(self, *values: str) -> None:
        for value in values:
            self.values |= {value, quote(value, safe=""), quote(value)}

    def saw(self, where: str, text: str | bytes) -> None:
        self.produced.append((where, text.decode("utf-8", "replace") if isinstance(text, bytes) else text))

    def leaks(self) -> list[str]:
        return [
            f"{secret!r} in {where}: …{text[max(0, text.find(secret) - 80) : text.find(secret) + 80]}…"
            for where, text in self.produced
            for secret in sorted(self.values)
            if secret in text
        ]
