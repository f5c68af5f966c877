"""A recording HTTP proxy between the app and DynamoDB Local, run as its own process.

``python -m bench.dynamo_proxy --port P --target http://127.0.0.1:D``; point the app's
``AWS_ENDPOINT_URL_DYNAMODB`` at it. For every DynamoDB request it logs the operation (``X-Amz-Target``),
when the request arrived and when DynamoDB's answer was complete (``time.monotonic()``, comparable across
processes), the HTTP status, and the capacity units consumed: it adds ``"ReturnConsumedCapacity":
"TOTAL"`` to each request that can take it (when the app asked for none) and reads ``ConsumedCapacity``
from the answer. The app sees one extra key in answers it did not ask capacity for, which boto3 passes
through and nothing reads. Requests are not re-signed: DynamoDB Local does not check signatures.

``GET /_bench/log`` returns the log as JSON, ``POST /_bench/clear`` empties it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from typing import Any
from urllib.parse import urlsplit

__all__ = ["CAPACITY_OPERATIONS", "READ_OPERATIONS", "consumed_units", "inject_capacity", "main"]

READ_OPERATIONS = frozenset({"GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"})
WRITE_OPERATIONS = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})
CAPACITY_OPERATIONS = READ_OPERATIONS | WRITE_OPERATIONS


def inject_capacity(operation: str, body: bytes) -> tuple[bytes, bool]:
    """The request body with ``ReturnConsumedCapacity: TOTAL`` added; True when it was added."""
    if operation not in CAPACITY_OPERATIONS:
        return body, False
    try:
        document = json.loads(body)
    except ValueError:
        return body, False
    if document.get("ReturnConsumedCapacity", "NONE") != "NONE":
        return body, False
    document["ReturnConsumedCapacity"] = "TOTAL"
    return json.dumps(document).encode(), True


def consumed_units(body: bytes) -> float | None:
    """Capacity units in a DynamoDB answer (summed over tables for batches and transactions)."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    consumed = document.get("ConsumedCapacity") if isinstance(document, dict) else None
    if consumed is None:
        return None
    total = 0.0
    for item in consumed if isinstance(consumed, list) else [consumed]:
        units = item.get("CapacityUnits")
        if units is None:
            units = item.get("ReadCapacityUnits", 0) + item.get("WriteCapacityUnits", 0)
        total += float(units)
    return total


async def _read_message(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, str], bytes]:
    """One HTTP/1.1 message: its head (without the blank line), its headers, its body."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if "chunked" in headers.get("transfer-encoding", ""):
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(parts)
        head = "\r\n".join(line for line in lines if not line.lower().startswith("transfer-encoding")).encode(
            "latin-1"
        )
        head += f"\r\ncontent-length: {len(body)}".encode()
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        head = head[:-4]
    return head, headers, body


def _with_length(head: bytes, length: int) -> bytes:
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"content-length:")]
    lines.append(b"Content-Length: %d" % length)
    return b"\r\n".join(lines) + b"\r\n\r\n"


class Proxy:
    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.log: list[dict[str, Any]] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                try:
                    head, headers, body = await _read_message(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                start = time.monotonic()
                path = head.split(b" ", 2)[1].decode("latin-1")
                if path.startswith("/_bench/"):
                    if path == "/_bench/clear":
                        self.log.clear()
                    answer = json.dumps(self.log).encode()
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                        b"content-length: %d\r\n\r\n%s" % (len(answer), answer)
                    )
                    await writer.drain()
                    continue
                operation = headers.get("x-amz-target", "?").rpartition(".")[2]
                body, injected = inject_capacity(operation, body)
                request = _with_length(head, len(body)) + body
                for attempt in (1, 2):
                    if upstream is None:
                        upstream = await asyncio.open_connection(self.host, self.port)
                    try:
                        upstream[1].write(request)
                        await upstream[1].drain()
                        response_head, response_headers, response_body = await _read_message(upstream[0])
                        break
                    except (asyncio.IncompleteReadError, ConnectionError):
                        upstream[1].close()
                        upstream = None  # DynamoDB closed an idle keep-alive connection: once more
                        if attempt == 2:
                            raise
                end = time.monotonic()
                status = int(response_head.split(b" ", 2)[1])
                self.log.append(
                    {
                        "op": operation,
                        "start": start,
                        "end": end,
                        "status": status,
                        "units": consumed_units(response_body),
                        "injected": injected,
                        "error": response_headers.get("x-amzn-errortype")
                        or (_error_type(response_body) if status >= 400 else None),
                    }
                )
                writer.write(_with_length(response_head, len(response_body)) + response_body)
                await writer.drain()
                if response_headers.get("connection", "").lower() == "close":
                    return
        finally:
            writer.close()
            if upstream is not None:
                upstream[1].close()


def _error_type(body: bytes) -> str | None:
    with contextlib.suppress(ValueError, AttributeError):
        return str(json.loads(body).get("__type", "")).rpartition("#")[2] or None
    return None


async def _main(port: int, target: str) -> None:
    proxy = Proxy(target)
    server = await asyncio.start_server(proxy.serve, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--target", required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args.port, args.target))


if __name__ == "__main__":
    main()
