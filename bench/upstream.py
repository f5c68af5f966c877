"""The fake model: an OpenAI-compatible ``/v1/chat/completions`` server, run as its own process.

``python -m bench.upstream --port N``. It is stateless: what to answer is written in the last user
message, as ``[[bench {"id": "...", "n": 100, "chars": 4, "pace_ms": 20, "text": "words", "tool": ...}]]``:

- ``n`` text deltas of ``chars`` characters (``bench.text.pieces``; ``"text": "cjk"`` for the seed bench's
  Chinese/emoji tokens), the first at once, delta ``k`` at ``first + k * pace_ms`` (an absolute schedule,
  so pacing does not drift);
- with ``"tool": {"name": ..., "arguments": {...}}``, a request whose last message is the user's gets that
  tool call instead; once the tool result is the last message, the text follows.

The wire format comes from ``tests/fakes/openai_upstream.Reply`` (the test suite's fake). Every request is
recorded: the script id, when it arrived and when each text delta left (``time.monotonic()``, comparable
across processes). ``GET /_bench/requests`` returns the records, ``POST /_bench/clear`` forgets them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import time
from typing import Any

from tests.fakes.openai_upstream import Reply

from bench.text import cjk_pieces, pieces

__all__ = ["SCRIPT", "main", "script_marker"]

SCRIPT = re.compile(r"\[\[bench (\{.*?\})\]\]", re.DOTALL)


def script_marker(**script: Any) -> str:
    """The text to put in a user message to make the upstream answer ``script``."""
    return f"[[bench {json.dumps(script, separators=(',', ':'))}]]"


class Upstream:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        received_at = time.monotonic()
        request_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
        method, path, _ = request_line.split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        if path.startswith("/_bench/"):
            if path == "/_bench/clear":
                self.records.clear()
            await _answer(writer, 200, json.dumps(self.records).encode())
            return
        if method == "GET" and path.rstrip("/") in ("", "/healthz"):
            await _answer(writer, 200, b'{"status":"ok"}')
            return
        if not path.endswith("/chat/completions"):
            await _answer(writer, 404, b'{"error":{"message":"not found"}}')
            return
        messages = json.loads(body).get("messages", [])
        user: dict[str, Any] = next((m for m in reversed(messages) if m.get("role") == "user"), {})
        match = SCRIPT.search(str(user.get("content", "")))
        script: dict[str, Any] = json.loads(match.group(1)) if match else {}
        record: dict[str, Any] = {"id": script.get("id"), "received_at": received_at, "sent_at": []}
        self.records.append(record)
        tool = script.get("tool")
        if tool and messages and messages[-1].get("role") == "user":
            record["kind"] = "tool_call"
            call_id = f"call_{script.get('id', 'x')}"
            reply = Reply().tool_call(
                0, id=call_id, name=tool["name"], arguments=json.dumps(tool["arguments"])
            )
            reply = reply.finish("tool_calls").usage(20, 10).done()
            await _play(writer, [w for w in reply.writes if isinstance(w, bytes)], 0, 0.0, record)
            return
        record["kind"] = "text"
        n = int(script.get("n", 5))
        deltas = cjk_pieces(n) if script.get("text") == "cjk" else pieces(n, int(script.get("chars", 4)))
        reply = Reply.chat(*deltas, usage=(20, n))
        writes = [w for w in reply.writes if isinstance(w, bytes)]
        await _play(writer, writes, n, float(script.get("pace_ms", 0)) / 1000, record)


async def _answer(writer: asyncio.StreamWriter, status: int, body: bytes) -> None:
    writer.write(
        f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()


async def _play(
    writer: asyncio.StreamWriter, writes: list[bytes], n: int, pace: float, record: dict[str, Any]
) -> None:
    """Head, then one HTTP chunk per write; writes 1..n are the text deltas, sent on schedule."""
    writer.write(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
        b"connection: close\r\ncache-control: no-cache\r\n\r\n"
    )
    first: float | None = None
    for index, data in enumerate(writes):
        if 1 <= index <= n:
            if first is None:
                first = time.monotonic()
            elif pace:
                delay = first + (index - 1) * pace - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
        if 1 <= index <= n:
            record["sent_at"].append(time.monotonic())  # before the write: it goes out within it
        writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        await writer.drain()
    writer.write(b"0\r\n\r\n")
    await writer.drain()


async def _main(port: int) -> None:
    upstream = Upstream()
    server = await asyncio.start_server(upstream.serve, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(parser.parse_args().port))


if __name__ == "__main__":
    main()
