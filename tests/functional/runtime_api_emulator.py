"""An emulator of the Lambda Runtime API, written from the protocol (LAMBDA_STREAMING.md), on raw sockets.

It serves queued events on `/invocation/next` and checks every request the runtime makes: the exact set
of headers and their values, the JSON prelude and its 8 NUL bytes, the chunked framing (it parses chunk
sizes itself), the trailers, the error documents. Every deviation is recorded in ``violations`` (and
answered with a 400); tests call ``assert_clean()``. Each body chunk is stamped with ``time.monotonic()``
when it arrives, so tests can prove that nothing was buffered on the way. ``polled`` is set when the
runtime first asks for an invocation (its init is over), and ``handed_out`` stamps when each event went
out, so tests can time an invocation from the runtime's side. Each connection is served on its own, so a
runtime with several slots gets several invocations at once (one per waiting `/next`); ``peak_outstanding``
is the most that were ever handed out and not yet answered. ``invoke(on_stream=)`` hands over a streamed
answer as it arrives (the prelude, then each body chunk, then None), for a front that serves it on.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

API = "/2018-06-01/runtime"
PRELUDE_DELIMITER = b"\0" * 8
TRAILER_NAMES = ("Lambda-Runtime-Function-Error-Type", "Lambda-Runtime-Function-Error-Body")
STREAM_HEADERS = {
    "lambda-runtime-function-response-mode": "streaming",
    "transfer-encoding": "chunked",
    "trailer": ", ".join(TRAILER_NAMES),
    "content-type": "application/vnd.awslambda.http-integration-response",
}
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:agentstream"
_INVOCATION_PATH = re.compile(rf"^{API}/invocation/(?P<id>[^/]+)/(?P<kind>response|error)$")


@dataclass
class Chunk:
    data: bytes
    at: float


@dataclass
class Result:
    """What the runtime answered for one invocation (or for the init)."""

    request_id: str
    kind: str  # "buffered", "streamed" or "error"
    headers: dict[str, str]
    body: bytes = b""
    prelude: dict[str, Any] | None = None
    prelude_at: float | None = None
    chunks: list[Chunk] = field(default_factory=list)
    trailers: dict[str, str] = field(default_factory=dict)
    connection: int = 0

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def streamed_body(self) -> bytes:
        return b"".join(chunk.data for chunk in self.chunks)

    @property
    def trailer_error(self) -> dict[str, Any] | None:
        body = self.trailers.get("lambda-runtime-function-error-body")
        return json.loads(base64.b64decode(body)) if body is not None else None


@dataclass
class _Queued:
    request_id: str
    body: bytes
    headers: dict[str, str]


class _Violation(Exception):
    pass


class RuntimeApiEmulator:
    def __init__(self) -> None:
        self.violations: list[str] = []
        self.connections = 0
        self.init_error: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self.polled = asyncio.Event()  # the first GET /invocation/next arrived
        self.handed_out: dict[str, float] = {}  # request id -> time.monotonic() its event went out
        self._queue: asyncio.Queue[_Queued] = asyncio.Queue()
        self._results: dict[str, asyncio.Future[Result]] = {}
        self._outstanding: set[str] = set()
        self.peak_outstanding = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._drop_after_chunks: dict[str, int] = {}
        self._listeners: dict[str, Callable[[dict[str, Any] | bytes | None], None]] = {}

    async def __aenter__(self) -> RuntimeApiEmulator:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def address(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    def invoke(
        self,
        event: Any,
        *,
        deadline_ms: int | None = None,
        trace_id: str | None = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        client_context: dict[str, Any] | None = None,
        cognito_identity: dict[str, Any] | None = None,
        drop_after_chunks: int | None = None,
        on_stream: Callable[[dict[str, Any] | bytes | None], None] | None = None,
    ) -> asyncio.Future[Result]:
        """Queue an event; the future resolves with the runtime's answer.

        ``drop_after_chunks`` makes the emulator break the connection after that many body chunks of
        a streamed answer (a Runtime API failure, to see the runtime clean up).
        """
        request_id = str(uuid.uuid4())
        headers = {
            "Content-Type": "application/json",
            "Lambda-Runtime-Aws-Request-Id": request_id,
            "Lambda-Runtime-Deadline-Ms": str(deadline_ms or int(time.time() * 1000) + 30_000),
            "Lambda-Runtime-Invoked-Function-Arn": FUNCTION_ARN,
        }
        if trace_id is not None:
            headers["Lambda-Runtime-Trace-Id"] = trace_id
        if client_context is not None:
            headers["Lambda-Runtime-Client-Context"] = json.dumps(client_context)
        if cognito_identity is not None:
            headers["Lambda-Runtime-Cognito-Identity"] = json.dumps(cognito_identity)
        if drop_after_chunks is not None:
            self._drop_after_chunks[request_id] = drop_after_chunks
        if on_stream is not None:
            self._listeners[request_id] = on_stream
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._results[request_id] = future
        self._queue.put_nowait(_Queued(request_id, json.dumps(event).encode(), headers))
        return future

    def assert_clean(self) -> None:
        assert not self.violations, "Runtime API protocol violations:\n" + "\n".join(self.violations)

    # --- the server -----------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        number = self.connections
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\r\n")
                except asyncio.IncompleteReadError as exc:
                    if exc.partial:
                        self._violate(f"connection {number}: closed inside a request line {exc.partial!r}")
                    return
                except ConnectionError:
                    return  # the runtime went away between two requests (the test stopped it)
                try:
                    keep = await self._handle(number, line, reader, writer)
                except _Violation as exc:
                    self._violate(str(exc))
                    await self._answer(writer, 400, {"errorMessage": str(exc), "errorType": "InvalidRequest"})
                    return
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            self._violate(f"connection {number}: broken mid-request ({exc!r})")
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _handle(
        self, number: int, line: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        method, path, _version = _split_request_line(line)
        headers = await _read_fields(reader, "request header")
        if "host" not in headers or "user-agent" not in headers:
            raise _Violation(f"{method} {path}: Host and User-Agent are required, got {sorted(headers)}")
        if method == "GET" and path == f"{API}/invocation/next":
            _expect_headers(headers, {}, what=path)
            self.polled.set()
            queued = await self._queue.get()
            self._outstanding.add(queued.request_id)
            self.peak_outstanding = max(self.peak_outstanding, len(self._outstanding))
            self.handed_out[queued.request_id] = time.monotonic()
            await _write_response(writer, 200, queued.headers, queued.body)
            return True
        if method != "POST":
            raise _Violation(f"unexpected request {method} {path}")
        if path == f"{API}/init/error":
            result = await self._read_error(number, "init", headers, reader, path)
            if self.init_error.done():
                raise _Violation("a second /init/error")
            self.init_error.set_result(result)
            await self._answer(writer, 202, {"status": "OK"})
            return True
        match = _INVOCATION_PATH.match(path)
        if match is None:
            raise _Violation(f"unexpected request {method} {path}")
        request_id = match["id"]
        if request_id not in self._outstanding:
            raise _Violation(f"{path}: {request_id} is not an invocation waiting for an answer")
        self._outstanding.discard(request_id)
        if match["kind"] == "error":
            result = await self._read_error(number, request_id, headers, reader, path)
        elif "lambda-runtime-function-response-mode" in headers:
            result = await self._read_streamed(number, request_id, headers, reader, writer, path)
            if result is None:
                return False
        else:
            _expect_headers(headers, {"content-type": "application/json", "content-length": None}, what=path)
            body = await reader.readexactly(int(headers["content-length"]))
            _parse_json(body, path)
            result = Result(request_id, "buffered", headers, body, connection=number)
        self._results[request_id].set_result(result)
        await self._answer(writer, 202, {"status": "OK"})
        return True

    async def _read_error(
        self, number: int, request_id: str, headers: dict[str, str], reader: asyncio.StreamReader, path: str
    ) -> Result:
        _expect_headers(
            headers,
            {
                "content-type": "application/json",
                "content-length": None,
                "lambda-runtime-function-error-type": None,
            },
            what=path,
        )
        body = await reader.readexactly(int(headers["content-length"]))
        _check_error_document(_parse_json(body, path), path)
        return Result(request_id, "error", headers, body, connection=number)

    async def _read_streamed(
        self,
        number: int,
        request_id: str,
        headers: dict[str, str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        path: str,
    ) -> Result | None:
        _expect_headers(headers, STREAM_HEADERS, what=path)
        result = Result(request_id, "streamed", headers, connection=number)
        drop_after = self._drop_after_chunks.get(request_id)
        listener = self._listeners.pop(request_id, lambda part: None)
        try:
            return await self._read_chunks(result, reader, path, drop_after, listener)
        finally:
            listener(None)

    async def _read_chunks(
        self,
        result: Result,
        reader: asyncio.StreamReader,
        path: str,
        drop_after: int | None,
        listener: Callable[[dict[str, Any] | bytes | None], None],
    ) -> Result | None:
        request_id = result.request_id
        while True:
            size_line = await reader.readuntil(b"\r\n")
            if not re.fullmatch(rb"[0-9a-f]+\r\n", size_line):
                raise _Violation(f"{path}: bad chunk size line {size_line!r}")
            size = int(size_line, 16)
            if size == 0:
                break
            data = await reader.readexactly(size)
            arrived = time.monotonic()
            if await reader.readexactly(2) != b"\r\n":
                raise _Violation(f"{path}: chunk of {size} bytes not followed by CRLF")
            if result.prelude is None:
                result.prelude = _check_prelude(data, path)
                result.prelude_at = arrived
                listener(result.prelude)
                continue
            result.chunks.append(Chunk(data, arrived))
            listener(data)
            if drop_after is not None and len(result.chunks) >= drop_after:
                self._results[request_id].set_result(result)
                return None
        if result.prelude is None:
            raise _Violation(f"{path}: the streamed body ended without a prelude")
        result.trailers = await _read_fields(reader, "trailer")
        _check_trailers(result.trailers, path)
        return result

    async def _answer(self, writer: asyncio.StreamWriter, status: int, document: dict[str, Any]) -> None:
        await _write_response(
            writer, status, {"Content-Type": "application/json"}, json.dumps(document).encode()
        )

    def _violate(self, message: str) -> None:
        """Record a deviation and fail every test still waiting for an answer, loudly and at once."""
        self.violations.append(message)
        print(f"RUNTIME API VIOLATION: {message}")
        for future in [*self._results.values(), self.init_error]:
            if not future.done():
                future.set_exception(AssertionError(f"Runtime API protocol violation: {message}"))


def _split_request_line(line: bytes) -> tuple[str, str, str]:
    parts = line[:-2].decode("latin-1").split(" ")
    if len(parts) != 3 or parts[2] != "HTTP/1.1":
        raise _Violation(f"bad request line {line!r}")
    return parts[0], parts[1], parts[2]


async def _read_fields(reader: asyncio.StreamReader, what: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    while (line := (await reader.readuntil(b"\r\n"))[:-2]) != b"":
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep or name != name.strip() or not name:
            raise _Violation(f"bad {what} line {line!r}")
        if name.lower() in fields:
            raise _Violation(f"{what} {name} sent twice")
        fields[name.lower()] = value.strip()
    return fields


def _expect_headers(headers: dict[str, str], expected: dict[str, str | None], *, what: str) -> None:
    """Exactly Host, User-Agent and ``expected`` (value None: any value), nothing else."""
    allowed = {"host", "user-agent", *expected}
    if extra := sorted(set(headers) - allowed):
        raise _Violation(f"{what}: unexpected headers {extra}")
    if missing := sorted(set(expected) - set(headers)):
        raise _Violation(f"{what}: missing headers {missing}")
    for name, value in expected.items():
        if value is not None and headers[name] != value:
            raise _Violation(f"{what}: header {name} is {headers[name]!r}, expected {value!r}")


def _parse_json(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise _Violation(f"{what}: body is not JSON ({exc}): {body[:200]!r}") from exc


def _check_error_document(document: Any, what: str) -> None:
    if not isinstance(document, dict):
        raise _Violation(f"{what}: error document is not an object")
    for key, kind in (("errorMessage", str), ("errorType", str), ("stackTrace", list)):
        if not isinstance(document.get(key), kind):
            raise _Violation(f"{what}: error document needs {key} as {kind.__name__}: {document}")


def _check_prelude(data: bytes, what: str) -> dict[str, Any]:
    if not data.endswith(PRELUDE_DELIMITER):
        raise _Violation(f"{what}: first chunk must be the JSON prelude and 8 NULs, got {data[:200]!r}")
    prelude = _parse_json(data[: -len(PRELUDE_DELIMITER)], f"{what} prelude")
    if not isinstance(prelude, dict):
        raise _Violation(f"{what}: prelude is not an object")
    if extra := sorted(set(prelude) - {"statusCode", "headers", "multiValueHeaders", "cookies"}):
        raise _Violation(f"{what}: unexpected prelude keys {extra}")
    if not isinstance(prelude.get("statusCode"), int) or not 100 <= prelude["statusCode"] <= 599:
        raise _Violation(f"{what}: prelude statusCode must be an HTTP status: {prelude}")
    headers = prelude.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise _Violation(f"{what}: prelude headers must map names to strings: {prelude}")
    cookies = prelude.get("cookies", [])
    if not isinstance(cookies, list) or not all(isinstance(c, str) for c in cookies):
        raise _Violation(f"{what}: prelude cookies must be a list of strings: {prelude}")
    multi = prelude.get("multiValueHeaders", {})
    if not isinstance(multi, dict) or not all(
        isinstance(v, list) and all(isinstance(i, str) for i in v) for v in multi.values()
    ):
        raise _Violation(f"{what}: prelude multiValueHeaders must map names to lists of strings: {prelude}")
    return prelude


def _check_trailers(trailers: dict[str, str], what: str) -> None:
    declared = {name.lower() for name in TRAILER_NAMES}
    if extra := sorted(set(trailers) - declared):
        raise _Violation(f"{what}: undeclared trailers {extra}")
    if trailers and set(trailers) != declared:
        raise _Violation(f"{what}: an error needs both trailers, got {sorted(trailers)}")
    if trailers:
        try:
            document = json.loads(
                base64.b64decode(trailers["lambda-runtime-function-error-body"], validate=True)
            )
        except (ValueError, binascii.Error) as exc:
            raise _Violation(f"{what}: Error-Body trailer is not base64 JSON ({exc})") from exc
        _check_error_document(document, f"{what} trailer")


async def _write_response(
    writer: asyncio.StreamWriter, status: int, headers: dict[str, str], body: bytes
) -> None:
    reason = {200: "OK", 202: "Accepted", 400: "Bad Request"}.get(status, "Unknown")
    lines = [f"HTTP/1.1 {status} {reason}", *itertools.starmap("{}: {}".format, headers.items())]
    lines.append(f"Content-Length: {len(body)}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    await writer.drain()
