"""An incremental Server-Sent Events parser over raw bytes (the WHATWG event-stream rules).

Network reads split the stream anywhere: inside a UTF-8 character, between ``\\r`` and ``\\n``, inside a
field. ``SSEDecoder.feed`` takes each read as it comes and returns the events it completed, so nothing
waits for more bytes than an event needs. Bytes are decoded strictly: invalid UTF-8 raises
``UnicodeDecodeError`` instead of inventing U+FFFD characters the server never sent.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

__all__ = ["SSEDecoder", "ServerSentEvent"]

_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    data: str
    event: str = "message"
    id: str | None = None


class SSEDecoder:
    """Feed it bytes as they arrive; it returns each event once its terminating blank line is in.

    An event cut off by the end of the stream (no blank line after it) is never returned, as the spec says.
    """

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="strict")
        self._at_start = True
        self._pending: list[str] = []  # the current, unterminated line, in pieces
        self._skip_lf = False  # the last piece ended in "\r": a "\n" opening the next one belongs to it
        self._data: list[str] = []
        self._event = ""
        self._last_id: str | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        text = self._utf8.decode(chunk)
        if self._at_start and text:
            self._at_start = False
            text = text.removeprefix("\ufeff")
        if self._skip_lf and text:
            self._skip_lf = False
            text = text.removeprefix("\n")
        if not text:
            return []
        if "\r" not in text:  # nearly every server: "\n" only, no regex needed
            if "\n" not in text:
                self._pending.append(text)
                return []
            if self._pending:
                self._pending.append(text)
                text = "".join(self._pending)
            *lines, rest = text.split("\n")
            self._pending = [rest] if rest else []
        else:
            self._pending.append(text)
            buffered = "".join(self._pending)
            *lines, rest = _LINE_END.split(buffered)
            self._pending = [rest] if rest else []
            self._skip_lf = buffered.endswith("\r")
        events: list[ServerSentEvent] = []
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._last_id = value
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return ServerSentEvent(data="\n".join(data), event=event or "message", id=self._last_id)
