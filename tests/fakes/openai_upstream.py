"""A fake OpenAI-compatible upstream: a real HTTP/1.1 server on 127.0.0.1 that plays scripted replies.

Use the ``fake_openai`` fixture (tests/conftest.py)::

    fake_openai.enqueue(Reply.chat("你", "好", usage=(3, 2)))        # one reply per upstream request
    provider = OpenAIProvider(base_url=fake_openai.base_url)         # base_url ends in /v1
    ...
    fake_openai.requests[0].json["messages"]                         # what the client sent
    await fake_openai.wait_client_closed(0, within=1.0)              # the client hung up (after aclose)

A ``Reply`` is a status, headers and a list of *writes*: each write goes out as one HTTP chunk
(``Transfer-Encoding: chunked``) in its own socket write, so the client's reads see exactly those
boundaries, even when a write ends in the middle of a UTF-8 character. ``pause(s)`` sleeps between
writes. A reply ends cleanly (terminating chunk), or with ``drop()`` (socket closed mid-body) or
``stall()`` (nothing more is sent until the client goes away). Every connection is closed after its reply,
unless the fake is made with ``FakeOpenAI(keep_alive=True)``: then a connection serves request after
request, and ``RecordedRequest.connection`` tells which connection carried each one.

The server runs its own event loop in a background thread, so it works the same from sync tests, async
tests, and behind an app served by uvicorn in another thread. Requests that find no scripted reply get
HTTP 500 with an OpenAI-style error body naming the problem.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Literal, Self

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["FakeOpenAI", "RecordedRequest", "Reply"]

Ending = Literal["end", "drop", "stall"]


class Reply:
    """One scripted HTTP response. Builder methods append writes and return the reply, so they chain."""

    def __init__(
        self,
        status: int = 200,
        *,
        headers: Mapping[str, str] | None = None,
        newline: str = "\n",
        model: str = "fake-model",
    ) -> None:
        self.status = status
        default_type = "text/event-stream" if status < 400 else "application/json"
        self.headers = {"content-type": default_type, **{k.lower(): v for k, v in (headers or {}).items()}}
        self.newline = newline  # line ending of the SSE events (try "\r\n" or "\r")
        self.model = model
        self.writes: list[bytes | float] = []  # bytes: one socket write; float: a pause in seconds
        self.ending: Ending = "end"

    @classmethod
    def chat(
        cls,
        *deltas: str,
        finish: str = "stop",
        usage: tuple[int, int] | None = (10, 5),
        pause: float = 0.0,
    ) -> Reply:
        """A role chunk, one chunk per text delta (``pause`` s apart), finish, usage, [DONE]."""
        reply = cls()
        reply.event(cls._envelope({"role": "assistant", "content": ""}, reply.model))
        for i, delta in enumerate(deltas):
            if i and pause:
                reply.pause(pause)
            reply.text(delta)
        reply.finish(finish)
        if usage is not None:
            reply.usage(*usage)
        return reply.done()

    @classmethod
    def error(cls, status: int, message: str, *, type: str = "invalid_request_error") -> Reply:
        """An HTTP error with OpenAI's error body ``{"error": {"message", "type", ...}}``."""
        body = {"error": {"message": message, "type": type, "param": None, "code": None}}
        return cls(status).raw(json.dumps(body))

    def raw(self, data: bytes | str) -> Self:
        """Exactly these bytes (str is UTF-8 encoded) as one write."""
        self.writes.append(data.encode() if isinstance(data, str) else data)
        return self

    def pause(self, seconds: float) -> Self:
        self.writes.append(float(seconds))
        return self

    def event(self, payload: Any) -> Self:
        """``data: <payload as JSON>`` and a blank line, as one write (JSON keeps non-ASCII as UTF-8)."""
        line = "data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        return self.raw(line + self.newline * 2)

    def text(self, *deltas: str) -> Self:
        """One chunk with ``delta.content`` per delta."""
        for delta in deltas:
            self.event(self._envelope({"content": delta}, self.model))
        return self

    def tool_call(
        self, index: int, *, id: str | None = None, name: str | None = None, arguments: str = ""
    ) -> Self:
        """One streamed tool-call fragment: ``id`` and ``name`` in the first, ``arguments`` pieces after."""
        function: dict[str, str] = {"arguments": arguments}
        fragment: dict[str, Any] = {"index": index, "function": function}
        if id is not None:
            fragment.update(id=id, type="function")
        if name is not None:
            function["name"] = name
        return self.event(self._envelope({"tool_calls": [fragment]}, self.model))

    def finish(self, reason: str = "stop") -> Self:
        return self.event(self._envelope({}, self.model, finish_reason=reason))

    def usage(self, prompt_tokens: int, completion_tokens: int) -> Self:
        """The ``include_usage`` chunk: empty ``choices`` and the token counts."""
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        return self.event({**self._envelope(None, self.model), "choices": [], "usage": usage})

    def done(self) -> Self:
        return self.raw("data: [DONE]" + self.newline * 2)

    def drop(self) -> Self:
        """End by closing the socket without finishing the chunked body (the connection dies mid-reply)."""
        self.ending = "drop"
        return self

    def stall(self) -> Self:
        """After the writes, send nothing more and keep the connection open until the client closes it."""
        self.ending = "stall"
        return self

    def body(self) -> bytes:
        """All writes concatenated: the response body as the client will see it."""
        return b"".join(w for w in self.writes if isinstance(w, bytes))

    def split_at(self, *offsets: int, pause: float = 0.0) -> Self:
        """Cut the whole body into writes at these byte offsets (replacing earlier boundaries and pauses)."""
        body = self.body()
        cuts = [0, *sorted({o for o in offsets if 0 < o < len(body)}), len(body)]
        self.writes = []
        for start, end in itertools.pairwise(cuts):
            if start and pause:
                self.pause(pause)
            self.raw(body[start:end])
        return self

    @staticmethod
    def _envelope(
        delta: dict[str, Any] | None, model: str, finish_reason: str | None = None
    ) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": model,
        }
        if delta is not None:
            chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
        return chunk


@dataclass
class _Connection:
    """One accepted connection: what the client sent (fed by a pump task), and whether it hung up."""

    number: int
    received: asyncio.StreamReader
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    playing: RecordedRequest | None = None  # the request whose reply is being written


@dataclass
class RecordedRequest:
    """One request the fake received. Times are ``time.monotonic()``."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    received_at: float
    # Set when the client closed the connection while its reply was still playing (e.g. after aclose()).
    client_closed_at: float | None = None
    client_closed: threading.Event = field(default_factory=threading.Event)
    # when each body write of the reply left (time.monotonic()), in order
    sent_at: list[float] = field(default_factory=list)
    # which TCP connection carried it: 1 for the first the fake accepted, 2 for the next, ...
    connection: int = 0

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class FakeOpenAI:
    """The server. ``with FakeOpenAI() as fake:`` starts it on a free port and stops it afterwards."""

    def __init__(self, *, keep_alive: bool = False) -> None:
        self.keep_alive = keep_alive
        self.connections = 0  # how many connections the fake has accepted
        self.requests: list[RecordedRequest] = []
        self._replies: list[Reply] = []
        self._lock = threading.Lock()
        self._errors: list[BaseException] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-openai", daemon=True)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What an OpenAI client takes as its base URL: ``http://127.0.0.1:<port>/v1``."""
        return f"{self.url}/v1"

    def enqueue(self, *replies: Reply) -> None:
        """Script the next replies: each request (any path) takes the first one left."""
        with self._lock:
            self._replies.extend(replies)

    @property
    def pending(self) -> int:
        """How many scripted replies no request has taken yet."""
        with self._lock:
            return len(self._replies)

    async def wait_client_closed(self, index: int = -1, within: float = 1.0) -> float:
        """Wait until the client closed request ``index``'s connection; return the monotonic time it did.

        Fails (``TimeoutError``) if that does not happen ``within`` seconds. From sync code use
        ``fake.requests[i].client_closed.wait(seconds)`` instead.
        """
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            with self._lock:
                request = self.requests[index] if self.requests else None
            if request is not None and request.client_closed_at is not None:
                return request.client_closed_at
            await asyncio.sleep(0.005)
        raise TimeoutError(f"the client did not close upstream request {index} within {within} s")

    def start(self) -> Self:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=5)
        return self

    def stop(self) -> None:
        """Stop the server; raise if the fake itself failed while serving (a bug in the test's script)."""
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        self._loop.close()
        if self._errors:
            raise RuntimeError("fake OpenAI upstream failed while serving") from self._errors[0]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def _start(self) -> asyncio.Server:
        server = await asyncio.start_server(self._track, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return server

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()

    async def _track(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        with self._lock:
            self.connections += 1
            connection = _Connection(self.connections, asyncio.StreamReader())
        pump = asyncio.create_task(self._pump(reader, connection))
        try:
            while await self._serve(connection, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # the fake is stopping (ending normally spares asyncio's own callback a traceback)
        except Exception as exc:
            self._errors.append(exc)
        finally:
            self._connections.discard(task)
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve(self, connection: _Connection, writer: asyncio.StreamWriter) -> bool:
        """Read one request and play its reply; return whether the connection serves another one."""
        received = connection.received
        try:
            head = await received.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            return False  # the client closed a kept-alive connection between two requests
        request_line, *header_lines = head.decode("latin-1").split("\r\n")[:-2]
        method, path, _ = request_line.split(" ", 2)
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await received.readexactly(int(headers.get("content-length", "0")))
        request = RecordedRequest(
            method, path, headers, body, received_at=time.monotonic(), connection=connection.number
        )
        with self._lock:
            self.requests.append(request)
            reply = self._replies.pop(0) if self._replies else _unscripted(method, path)

        connection.playing = request
        try:
            await self._play(reply, writer, connection.gone, request)
        finally:
            connection.playing = None
        return self.keep_alive and reply.ending == "end" and not connection.gone.is_set()

    async def _play(
        self, reply: Reply, writer: asyncio.StreamWriter, gone: asyncio.Event, request: RecordedRequest
    ) -> None:
        known = reply.status in HTTPStatus._value2member_map_
        reason = HTTPStatus(reply.status).phrase if known else "Unknown"  # e.g. Anthropic's 529
        head = [f"HTTP/1.1 {reply.status} {reason}"]
        head += [f"{name}: {value}" for name, value in reply.headers.items()]
        head += ["transfer-encoding: chunked", "cache-control: no-cache"]
        head += ["", ""] if self.keep_alive else ["connection: close", "", ""]
        await self._write(writer, "\r\n".join(head).encode())
        for item in reply.writes:
            if gone.is_set():
                return
            if isinstance(item, float):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(gone.wait(), item)
            elif item:
                await self._write(writer, b"%x\r\n%s\r\n" % (len(item), item))
                request.sent_at.append(time.monotonic())
        if reply.ending == "end":
            await self._write(writer, b"0\r\n\r\n")
        elif reply.ending == "stall":
            await gone.wait()

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await writer.drain()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, connection: _Connection) -> None:
        """Pass on what the client sends, and notice it hanging up, also while a reply is playing."""
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65_536):
                connection.received.feed_data(data)
        connection.received.feed_eof()
        if (request := connection.playing) is not None:
            request.client_closed_at = time.monotonic()
            request.client_closed.set()
        connection.gone.set()


def _unscripted(method: str, path: str) -> Reply:
    return Reply.error(500, f"fake_openai: no scripted reply left for {method} {path}", type="server_error")
