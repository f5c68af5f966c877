"""agentstream behind the emulated Lambda path, reachable over plain HTTP like a function URL.

`LambdaFunctionUrl` runs, in a thread with its own event loop: moto's DynamoDB server, the Runtime API
emulator, the streaming-runtime layer in a subprocess serving ``agentstream.handlers.stream.handler``
(configured only through its environment), and an HTTP/1.1 front. The front turns each request into a
function URL event (payload 2.0), invokes it, and writes the answer back as it arrives: the prelude's
status and headers, then every body chunk the moment the runtime streams it (chunked encoding). So a
real client (the `openai` SDK, the AI SDK in node) talks to the Lambda path as it would to a URL.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.functional.runtime_api_emulator import Result, RuntimeApiEmulator
from tests.functional.test_streaming_runtime import runtime
from tests.support.cluster import REGION, ROOT, MotoServer

__all__ = ["LambdaFunctionUrl"]

HANDLER = "agentstream.handlers.stream.handler"
_REASONS = {200: "OK", 204: "No Content", 401: "Unauthorized", 404: "Not Found", 502: "Bad Gateway"}


def function_url_event(method: str, target: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    url = urlsplit(target)
    try:
        text, encoded = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode(), True
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": url.path,
        "rawQueryString": url.query,
        "headers": {**headers, "x-forwarded-proto": "https", "x-forwarded-port": "443"},
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "agentstream",
            "domainName": headers.get("host", "lambda-url.invalid"),
            "domainPrefix": "agentstream",
            "http": {
                "method": method,
                "path": url.path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
            "timeEpoch": int(time.time() * 1000),
        },
        "isBase64Encoded": encoded,
    }
    if url.query:
        event["queryStringParameters"] = dict(parse_qsl(url.query))
    if body:
        event["body"] = text
    return event


class LambdaFunctionUrl:
    """``with LambdaFunctionUrl(tmp, env) as url:`` the app on the Lambda path at ``url``."""

    def __init__(self, workdir: Path, env: dict[str, str], *, table: str = "lambda") -> None:
        self._workdir = workdir
        self._env = env
        self._table = table
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._thread_main, name="lambda-front", daemon=True)
        self.url = ""
        self.log = workdir / "runtime.log"

    def __enter__(self) -> str:
        self._thread.start()
        if not self._ready.wait(60) or self._failure is not None:
            failure, self._failure = self._failure, None
            self.__exit__()
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"the Lambda path did not start: {failure!r}\n{log}")
        return self.url

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        if self._failure is not None:  # e.g. a Runtime API protocol violation seen by the emulator
            raise self._failure

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:
            self._failure = e
            self._ready.set()

    async def _main(self) -> None:
        from agentstream.store import create_table

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        moto = MotoServer().start()
        try:
            await asyncio.to_thread(create_table, self._table, moto.client())
            env = {
                "AWS_ENDPOINT_URL_DYNAMODB": moto.endpoint,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_REGION": REGION,
                "AWS_DEFAULT_REGION": REGION,
                "AGENTSTREAM_TABLE": self._table,
                "PYTHONPATH": f"{ROOT / 'functions'}:{ROOT}",
                **self._env,
            }
            async with (
                RuntimeApiEmulator() as emulator,
                runtime(emulator, self._workdir, handler=HANDLER, env=env),
            ):
                self.emulator = emulator
                server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
                async with server:
                    await asyncio.wait_for(emulator.polled.wait(), 60)  # the app is built (Lambda's init)
                    self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
                    self._ready.set()
                    await self._stop.wait()
                emulator.assert_clean()
        finally:
            await asyncio.to_thread(moto.stop)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            request_line, *lines = head.split("\r\n")
            method, target, _ = request_line.split(" ", 2)
            headers = {}
            for line in lines:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            assert "chunked" not in headers.get("transfer-encoding", ""), "send bodies with a Content-Length"
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            await self._answer(function_url_event(method, target, headers, body), writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away: the invocation goes on, as behind a real function URL
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _answer(self, event: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        parts: asyncio.Queue[dict[str, Any] | bytes | None] = asyncio.Queue()
        result = self.emulator.invoke(event, on_stream=parts.put_nowait)
        first = asyncio.ensure_future(parts.get())
        await asyncio.wait({first, result}, return_when=asyncio.FIRST_COMPLETED)
        if not first.done():  # answered without streaming: buffered, or an invocation error
            first.cancel()
            await self._write_whole(result.result(), writer)
            return
        prelude = first.result()
        assert isinstance(prelude, dict)
        status = int(prelude["statusCode"])
        headers = {k.lower(): v for k, v in prelude.get("headers", {}).items()}
        headers.pop("content-length", None)
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
        lines += [f"{k}: {v}" for k, v in headers.items()] + [
            f"set-cookie: {c}" for c in prelude.get("cookies", [])
        ]
        lines += ["connection: close"] + ([] if status == 204 else ["transfer-encoding: chunked"])
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        while (part := await parts.get()) is not None:
            assert isinstance(part, bytes)
            if status != 204:
                writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                await writer.drain()
        if status != 204:
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    async def _write_whole(self, result: Result, writer: asyncio.StreamWriter) -> None:
        if result.kind == "error":
            status, headers, body = 502, {"content-type": "application/json"}, result.body
        else:
            response = result.json
            status, headers = int(response["statusCode"]), dict(response.get("headers") or {})
            raw = response.get("body") or ""
            body = base64.b64decode(raw) if response.get("isBase64Encoded") else raw.encode()
        headers = {k.lower(): v for k, v in headers.items() if k.lower() != "transfer-encoding"}
        headers.update({"content-length": str(len(body)), "connection": "close"})
        lines = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
