"""Test helpers: a real uvicorn server in a thread, and a raw SSE reader that timestamps events."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import uvicorn

from agentstream.devserver.procs import free_port


@contextlib.contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@dataclass
class SSEEvent:
    id: str | None
    data: dict[str, Any]
    at: float  # time.monotonic() when the event's last byte was read


@dataclass
class SSEStream:
    status: int
    headers: httpx.Headers
    events: list[SSEEvent] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    raw: bytes = b""

    def of(self, chunk_type: str) -> list[dict[str, Any]]:
        return [e.data for e in self.events if e.data.get("chunk_type") == chunk_type]

    @property
    def content(self) -> str:
        return "".join(e["content"] for e in self.of("content"))


def parse_sse(raw: bytes) -> list[tuple[int, dict[str, Any]]]:
    """(id, data) of every event in a whole SSE body."""
    events = []
    for block in raw.split(b"\n\n"):
        event_id, data, _ = parse_sse_block(block)
        if data is not None:
            events.append((int(event_id) if event_id is not None else -1, json.loads(data)))
    return events


def parse_sse_block(block: bytes) -> tuple[str | None, str | None, str | None]:
    """(id, data, comment) of one SSE event block; strict: each block is valid UTF-8 on its own."""
    text = block.decode("utf-8")  # raises on a broken UTF-8 sequence
    event_id = data = comment = None
    for line in text.split("\n"):
        if line.startswith(":"):
            comment = line[1:].strip()
        elif line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            data = line[6:] if data is None else data + "\n" + line[6:]
    return event_id, data, comment


S = TypeVar("S", bound=SSEStream)


def consume_sse(
    pieces: Iterable[bytes],
    result: S,
    *,
    stop_after: int | None = None,
    on_event: Callable[[S], None] | None = None,
    on_piece: Callable[[S], bool] | None = None,
) -> bool:
    """Parse network pieces into ``result`` as they arrive, each event timestamped when its last byte
    was read. True when it stopped at ``stop_after`` events (a client that leaves after event N never
    sees the events that shared its write) or when ``on_piece`` (called after each piece) says so."""
    buffer = b""
    for piece in pieces:
        result.raw += piece
        buffer += piece
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            event_id, data, comment = parse_sse_block(block)
            if comment is not None:
                result.comments.append(comment)
            if data is not None:
                result.events.append(SSEEvent(event_id, json.loads(data), time.monotonic()))
                if on_event is not None:
                    on_event(result)
            if stop_after is not None and len(result.events) >= stop_after:
                return True
        if on_piece is not None and on_piece(result):
            return True
    return False


def read_sse(
    url: str,
    body: dict[str, Any],
    *,
    key: str,
    stop_after: int | None = None,
    timeout: float = 30,
    on_event: Callable[[SSEStream], None] | None = None,
) -> SSEStream:
    """POST and read the SSE answer as it arrives, timestamping every event at the socket level.

    ``on_event`` is called after each event with what has been read so far (e.g. to act mid-stream).
    """
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(timeout=timeout) as client, client.stream("POST", url, json=body, headers=headers) as r:
        result = SSEStream(r.status_code, r.headers)
        consume_sse(r.iter_raw(), result, stop_after=stop_after, on_event=on_event)
        return result
        return result
