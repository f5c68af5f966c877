"""A real MCP server (the official ``mcp`` SDK, streamable HTTP) on 127.0.0.1, in a thread, for tests.

Tools: ``greet`` (Chinese and emoji text), ``slow`` (sleeps; notes when its request is cancelled),
``fail`` (raises: an ``isError`` result), ``big`` (a long text). With ``token`` set, every request must
carry ``Authorization: Bearer <token>`` (401 otherwise) and the server has the tool ``whoami``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Self

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from agentstream.devserver.procs import free_port

__all__ = ["GREETING", "McpTestServer"]

GREETING = "你好，{name}！👋🌏 欢迎"


class McpTestServer:
    def __init__(self, *, token: str | None = None) -> None:
        self.token = token
        self.port = free_port()
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.headers: list[dict[str, str]] = []  # of every request that reached the MCP endpoint
        self.slow_started = threading.Event()
        self.slow_cancelled = threading.Event()
        self.slow_cancelled_at: float | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def _app(self) -> Any:
        mcp = MCPServer("agentstream-test")

        if self.token is None:

            @mcp.tool(description="Greet someone warmly, in Chinese.")
            def greet(name: str) -> str:
                self.calls.append(("greet", {"name": name}))
                return GREETING.format(name=name)

            @mcp.tool(description="Wait a while, then answer.")
            async def slow(seconds: float) -> str:
                self.calls.append(("slow", {"seconds": seconds}))
                self.slow_started.set()
                try:
                    await asyncio.sleep(seconds)
                except asyncio.CancelledError:
                    self.slow_cancelled_at = time.monotonic()
                    self.slow_cancelled.set()
                    raise
                return "slept 😴"

            @mcp.tool(description="Always fails.")
            def fail(reason: str) -> str:
                self.calls.append(("fail", {"reason": reason}))
                raise ToolError(f"失败了: {reason}")

            @mcp.tool(description="A long text.")
            def big(size: int) -> str:
                self.calls.append(("big", {"size": size}))
                return "字" * size

        else:

            @mcp.tool(description="Who is calling.")
            def whoami() -> str:
                self.calls.append(("whoami", {}))
                return "authorized ✅"

        app = mcp.streamable_http_app()
        outer = self

        async def guarded(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            headers = {k.decode(): v.decode() for k, v in scope["headers"]}
            outer.headers.append(headers)

            async def closing(message: Any) -> None:
                # like the fake OpenAI upstream: no kept-alive connection outlives the app's event loop
                if message["type"] == "http.response.start":
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
                await send(message)

            if outer.token is not None and headers.get("authorization") != f"Bearer {outer.token}":
                start = {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [(b"content-type", b"application/json")],
                }
                await closing(start)
                await closing({"type": "http.response.body", "body": b'{"error": "unauthorized"}'})
                return
            await app(scope, receive, closing)

        return guarded

    def start(self) -> Self:
        config = uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the MCP test server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextmanager
def mcp_servers() -> Iterator[tuple[McpTestServer, McpTestServer]]:
    """An open server and one that wants a bearer token."""
    with McpTestServer() as open_server, McpTestServer(token="mcp-secret-token") as private:
        yield open_server, private
