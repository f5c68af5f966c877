"""The load client: raw asyncio HTTP/1.1 and SSE, with a timestamp on every socket read.

The hot path only reads and keeps ``(bytes, time.monotonic())`` pairs; chunked decoding and SSE parsing
happen after the stream ended, so a client reading 100 streams stays cheap. Each event is stamped with
the time of the read that completed it. ``time.monotonic()`` is CLOCK_MONOTONIC, the same clock in every
process on the machine, so these times compare directly with the fake upstream's and the proxy's.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Dechunker", "SSEEvent", "Stream", "parse_sse", "post_sse"]


@dataclass
class SSEEvent:
    at: float  # time.monotonic() of the read that completed the event
    id: str | None
    data: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.data.get("chunk_type", ""))


@dataclass
class Stream:
    sent_at: float
    status: int = 0
    events: list[SSEEvent] = field(default_factory=list)
    error: str | None = None
    ended_at: float = 0.0

    def of(self, kind: str) -> list[SSEEvent]:
        return [e for e in self.events if e.kind == kind]

    @property
    def content(self) -> str:
        return "".join(e.data.get("content", "") for e in self.of("content"))

    @property
    def done(self) -> dict[str, Any] | None:
        done = self.of("done")
        return done[-1].data if done else None

    @property
    def ok(self) -> bool:
        """HTTP 200, no transport error, and one ``done`` that says completed (the floor's done has no
        status: it counts as completed)."""
        done = self.done
        return (
            self.error is None
            and self.status == 200
            and done is not None
            and done.get("status", "completed") == "completed"
        )

    def first_content_at(self) -> float | None:
        contents = self.of("content")
        return contents[0].at if contents else None

    def char_arrivals(self) -> list[float]:
        """Arrival time of every character of the content, in order (robust to any regrouping)."""
        times: list[float] = []
        for event in self.of("content"):
            times.extend([event.at] * len(event.data.get("content", "")))
        return times


class Dechunker:
    """Incremental ``Transfer-Encoding: chunked`` decoder."""

    def __init__(self) -> None:
        self._buffer = b""
        self._remaining = 0
        self._state = "size"
        self.finished = False

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        out: list[bytes] = []
        while not self.finished:
            if self._state == "size":
                end = self._buffer.find(b"\r\n")
                if end < 0:
                    break
                size = int(self._buffer[:end].split(b";")[0], 16)
                self._buffer = self._buffer[end + 2 :]
                if size == 0:
                    self.finished = True
                    break
                self._remaining, self._state = size, "data"
            elif self._state == "data":
                if not self._buffer:
                    break
                take = self._buffer[: self._remaining]
                out.append(take)
                self._buffer = self._buffer[len(take) :]
                self._remaining -= len(take)
                if self._remaining:
                    break
                self._state = "crlf"
            else:
                if len(self._buffer) < 2:
                    break
                self._buffer = self._buffer[2:]
                self._state = "size"
        return b"".join(out)


def parse_sse(pieces: list[tuple[bytes, float]]) -> list[SSEEvent]:
    """Events of an SSE body given as (bytes, arrival time) pieces; comments (pings) are skipped."""
    events: list[SSEEvent] = []
    buffer = b""
    for data, at in pieces:
        buffer += data
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            event_id: str | None = None
            lines: list[str] = []
            for line in block.decode("utf-8").split("\n"):
                if line.startswith("id: "):
                    event_id = line[4:]
                elif line.startswith("data: "):
                    lines.append(line[6:])
            if lines and lines != ["[DONE]"]:  # [DONE]: the end of an OpenAI-style stream
                events.append(SSEEvent(at, event_id, json.loads("\n".join(lines))))
    return events


def _parse_response(stream: Stream, reads: list[tuple[bytes, float]]) -> None:
    raw = b"".join(data for data, _ in reads)
    head_end = raw.find(b"\r\n\r\n")
    if head_end < 0:
        stream.error = stream.error or f"no HTTP response head ({len(raw)} bytes)"
        return
    head = raw[:head_end].decode("latin-1").split("\r\n")
    stream.status = int(head[0].split(" ")[1])
    headers = {name.strip().lower(): value.strip() for name, _, value in (h.partition(":") for h in head[1:])}
    # Body pieces keep the time of the read that brought them.
    body_pieces: list[tuple[bytes, float]] = []
    offset = 0
    chunked = "chunked" in headers.get("transfer-encoding", "")
    dechunker = Dechunker()
    for data, at in reads:
        start = max(0, head_end + 4 - offset)
        offset += len(data)
        piece = data[start:]
        if piece:
            body_pieces.append((dechunker.feed(piece) if chunked else piece, at))
    if stream.status != 200:
        body = b"".join(p for p, _ in body_pieces)
        stream.error = stream.error or f"HTTP {stream.status}: {body[:300].decode('utf-8', 'replace')}"
        return
    try:
        stream.events = parse_sse(body_pieces)
    except (ValueError, UnicodeDecodeError) as exc:
        stream.error = stream.error or f"bad SSE body: {exc}"
    if chunked and not dechunker.finished and stream.error is None:
        stream.error = "the chunked body ended early"


async def post_sse(
    url: str, body: dict[str, Any], *, key: str | None = None, max_seconds: float = 120
) -> Stream:
    """POST ``body`` as JSON to ``url`` and read the SSE answer to its end. Never raises for transport
    problems: they land in ``Stream.error``."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    payload = json.dumps(body, ensure_ascii=False).encode()
    head = [
        f"POST {parts.path or '/'} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        "Accept: text/event-stream",
        f"Content-Length: {len(payload)}",
        "Connection: close",
    ]
    if key:
        head.append(f"Authorization: Bearer {key}")
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + payload
    reads: list[tuple[bytes, float]] = []
    stream = Stream(sent_at=time.monotonic())
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(max_seconds):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            await writer.drain()
            while data := await reader.read(65_536):
                reads.append((data, time.monotonic()))
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        stream.error = f"{type(exc).__name__}: {exc}"
    finally:
        if writer is not None:
            writer.close()
    stream.ended_at = time.monotonic()
    _parse_response(stream, reads)
    return stream
