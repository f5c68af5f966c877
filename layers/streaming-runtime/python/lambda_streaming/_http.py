"""A minimal HTTP/1.1 client for the Runtime API on asyncio streams.

Why not http.client: it blocks, and its chunked uploads cannot send trailers. Why not httpx: one more
dependency in every function, and it would have to be told not to buffer. The Runtime API is a local,
plain-HTTP, well-behaved peer, so a keep-alive connection, Content-Length or chunked bodies, and chunked
uploads with trailers are all this needs. asyncio sets TCP_NODELAY on its sockets, so each chunk leaves
as soon as it is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import dataclass

__all__ = ["Connection", "Response", "RuntimeApiError"]

_USER_AGENT = f"lambda-streaming/0.1 (python/{sys.version_info[0]}.{sys.version_info[1]})"
_MAX_LINE = 64 * 1024


class RuntimeApiError(Exception):
    """The Runtime API could not be reached, broke the connection, or answered something unreadable."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class Connection:
    """One keep-alive connection to the Runtime API, used for one request at a time."""

    def __init__(self, address: str) -> None:
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"AWS_LAMBDA_RUNTIME_API must be host:port, got {address!r}")
        self.address = address
        self._host = host.strip("[]")
        self._port = int(port)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.connects = 0

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> Response:
        """Send a request with a Content-Length body (none for GET) and read the whole answer."""
        all_headers = dict(headers or {})
        if method != "GET" or body:
            all_headers["Content-Length"] = str(len(body))
        try:
            writer = await self._open()
            writer.write(self._head(method, path, all_headers) + body)
            await writer.drain()
            return await self._read_response()
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            await self.close()
            raise RuntimeApiError(f"{method} {path}: {exc!r}") from exc

    async def start_chunked(self, method: str, path: str, headers: dict[str, str]) -> None:
        """Send the head of a chunked request; then `write_chunk` and `end_chunked`."""
        try:
            writer = await self._open()
            writer.write(self._head(method, path, {**headers, "Transfer-Encoding": "chunked"}))
            await writer.drain()
        except OSError as exc:
            await self.close()
            raise RuntimeApiError(f"{method} {path}: {exc!r}") from exc

    async def write_chunk(self, data: bytes) -> None:
        """Write one HTTP chunk and wait until it is handed to the kernel. Empty data is not a chunk."""
        if not data:
            return
        writer = self._writer
        if writer is None:
            raise RuntimeApiError("write_chunk without start_chunked")
        try:
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            await writer.drain()
        except OSError as exc:
            await self.close()
            raise RuntimeApiError(f"writing a chunk: {exc!r}") from exc

    async def end_chunked(self, trailers: dict[str, str] | None = None) -> Response:
        """Write the last chunk and the trailers, then read the answer."""
        writer = self._writer
        if writer is None:
            raise RuntimeApiError("end_chunked without start_chunked")
        fields = "".join(f"{name}: {value}\r\n" for name, value in (trailers or {}).items())
        try:
            writer.write(b"0\r\n" + fields.encode("latin-1") + b"\r\n")
            await writer.drain()
            return await self._read_response()
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            await self.close()
            raise RuntimeApiError(f"ending a chunked request: {exc!r}") from exc

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _open(self) -> asyncio.StreamWriter:
        if self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(
                self._host, self._port, limit=_MAX_LINE
            )
            self.connects += 1
        return self._writer

    def _head(self, method: str, path: str, headers: dict[str, str]) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.address}", f"User-Agent: {_USER_AGENT}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _read_response(self) -> Response:
        reader = self._reader
        if reader is None:
            raise RuntimeApiError("no connection to read from")
        status_line = (await reader.readuntil(b"\r\n")).decode("latin-1")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ValueError(f"bad status line {status_line!r}")
        headers = await self._read_fields(reader)
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await self._read_chunked(reader)
        elif "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        else:
            body = await reader.read()
            headers["connection"] = "close"
        if headers.get("connection", "").lower() == "close" or parts[0] == "HTTP/1.0":
            await self.close()
        return Response(int(parts[1]), headers, body)

    @staticmethod
    async def _read_fields(reader: asyncio.StreamReader) -> dict[str, str]:
        fields: dict[str, str] = {}
        while (line := (await reader.readuntil(b"\r\n"))[:-2]) != b"":
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep:
                raise ValueError(f"bad header line {line!r}")
            fields[name.strip().lower()] = value.strip()
        return fields

    async def _read_chunked(self, reader: asyncio.StreamReader) -> bytes:
        body = bytearray()
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            body += await reader.readexactly(size)
            if await reader.readexactly(2) != b"\r\n":
                raise ValueError("chunk not followed by CRLF")
        await self._read_fields(reader)
        return bytes(body)
