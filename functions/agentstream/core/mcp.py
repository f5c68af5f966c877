"""Tools from MCP servers: the client side of MCP's streamable HTTP transport, and the run's tools.

Protocol revision 2026-07-28, over the project's httpx (the official SDK costs more than a second of
import and a second HTTP stack on a cold start). That revision has no handshake and no session: every
JSON-RPC request is one POST carrying its protocol version, client info and capabilities in
``params._meta``, mirrored in the ``MCP-Protocol-Version``, ``Mcp-Method`` and ``Mcp-Name`` headers
(plus ``Mcp-Param-*`` for tool parameters the server marks with ``x-mcp-header``). The server answers
``application/json`` or a ``text/event-stream`` of request-scoped notifications ending with the
response. Closing that stream cancels the request on the server, so a call cancelled here (the run's
deadline, a cancel request) leaves its ``async with client.stream(...)`` and closes the connection.
A server that answers as one of the earlier revisions gets their ``initialize`` handshake and session
instead (the transport's backward compatibility), once per process.

- ``tools/list`` (all pages) is fetched once per process per server and kept
  ``AGENTSTREAM_MCP_LIST_TTL_SECONDS``; the run start fetches the lists in parallel with its store
  reads. A server that cannot be listed is left out of the run, which goes on with a ``metadata``
  event saying so (``mcp_unavailable``), so one broken server never breaks an agent.
- Each tool is offered to the model as ``mcp__<server>__<tool>`` (``^[a-zA-Z0-9_-]{1,64}$``, which
  the model APIs accept). A tool name that does not fit is cleaned up and given a short hash of the
  original, so names stay deterministic and distinct.
- A call is bounded by ``AGENTSTREAM_MCP_CALL_TIMEOUT_SECONDS``; its text is cut at
  ``AGENTSTREAM_MCP_RESULT_MAX_CHARS``. A result with ``isError``, a JSON-RPC error, a timeout or a
  transport failure raise ``ToolFailed``: the model sees an error result and the run goes on.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import logging
import re
import threading
import time
import weakref
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from agentstream.config import parse_headers
from agentstream.core.providers._sse import SSEDecoder
from agentstream.core.providers.base import ToolSpec
from agentstream.core.tools import RunTools, Tool, ToolFailed

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from agentstream.config import McpServer, Settings

__all__ = [
    "PROTOCOL_VERSION",
    "McpClient",
    "McpError",
    "clear_cache",
    "header_annotation_problem",
    "model_tool_name",
    "run_tools",
    "split_tool_entry",
]

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = "2026-07-28"
_CLIENT_INFO = {"name": "agentstream", "version": "0.1.0"}
_PREFIX = "mcp:"
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
# a response bigger than this is not read (a tool result is cut far below it anyway)
_MAX_RESPONSE_BYTES = 8 * 1024 * 1024
# a list that failed is not asked again for this long (a dead server would slow every run start)
_FAILED_LIST_TTL_SECONDS = 5.0
_MAX_PAGES = 50
# Idle MCP connections are kept 30 s like the model's; their own pool, so tool calls never wait for
# connection slots held by model streams.
_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30.0)


class McpError(Exception):
    """An MCP server failed a request (transport, HTTP status, JSON-RPC error, malformed answer)."""


def split_tool_entry(entry: str) -> tuple[str, str | None] | None:
    """``mcp:<server>`` -> (server, None), ``mcp:<server>/<tool>`` -> (server, tool), else None."""
    if not entry.startswith(_PREFIX):
        return None
    server, _, tool = entry[len(_PREFIX) :].partition("/")
    return server, (tool or None)


def model_tool_name(server: str, tool: str, taken: Collection[str] = ()) -> str:
    """The name the model sees for ``tool`` of ``server``: ``mcp__<server>__<tool>`` when that is a
    valid name, else the tool's name cleaned up and cut, with a hash of the original (longer if
    ``taken`` holds it already)."""
    plain = f"mcp__{server}__{tool}"
    if _NAME.match(plain) and plain not in taken:
        return plain
    cleaned = re.sub(r"[^a-zA-Z0-9_-]", "_", tool)
    digest = hashlib.sha256(f"{server}/{tool}".encode()).hexdigest()
    for size in (8, 12, 16, 64):
        suffix = "_" + digest[:size]
        room = 64 - len(f"mcp__{server}__") - len(suffix)
        name = f"mcp__{server}__{cleaned[: max(room, 0)]}{suffix}"
        if name not in taken:
            return name[:64]
    return name[:64]


# --- the transport ------------------------------------------------------------------------------

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
    weakref.WeakKeyDictionary()
)
_clients_lock = threading.Lock()


def _shared_client() -> httpx.AsyncClient:
    """The running event loop's client for MCP servers (a client's connections belong to one loop)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        with _clients_lock:
            for closed in [other for other in _clients if other.is_closed()]:
                del _clients[closed]
            client = _clients[loop] = httpx.AsyncClient(limits=_LIMITS)
    return client


def _header_value(value: str) -> str:
    """A header value as the transport wants it: plain visible ASCII, else the Base64 sentinel form."""
    plain = (
        all(" " <= c <= "~" or c == "\t" for c in value)
        and value == value.strip()
        and not (value.startswith("=?base64?") and value.endswith("?="))
    )
    return value if plain else "=?base64?" + base64.b64encode(value.encode()).decode() + "?="


def _param_headers(schema: Mapping[str, Any], arguments: Mapping[str, Any]) -> dict[str, str]:
    """``Mcp-Param-{name}`` for each parameter marked ``x-mcp-header`` (reachable through
    ``properties`` only) that has a value in ``arguments``."""
    headers: dict[str, str] = {}

    def walk(node: Mapping[str, Any], values: Any) -> None:
        properties = node.get("properties")
        if not isinstance(properties, Mapping) or not isinstance(values, Mapping):
            return
        for key, sub in properties.items():
            if not isinstance(sub, Mapping) or key not in values:
                continue
            value = values[key]
            name = sub.get("x-mcp-header")
            if isinstance(name, str) and value is not None:
                text = ("true" if value else "false") if isinstance(value, bool) else str(value)
                headers[f"Mcp-Param-{name}"] = _header_value(text)
            walk(sub, value)

    walk(schema, arguments)
    return headers


_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def header_annotation_problem(schema: Any) -> str | None:
    """Why a tool's ``x-mcp-header`` annotations are invalid (the transport makes clients leave such a
    tool out), or None: each must name a header token, once (case-insensitively), on a string, integer
    or boolean property reached from the root through ``properties`` only."""
    names: set[str] = set()

    def walk(node: Any, is_property: bool, plain_path: bool) -> str | None:
        children: list[tuple[Any, bool, bool]] = []
        if isinstance(node, list):
            children = [(item, False, False) for item in node]
        elif isinstance(node, dict):
            for key, value in node.items():
                if key == "x-mcp-header":
                    if not (is_property and plain_path):
                        return "x-mcp-header outside a chain of properties"
                    if not isinstance(value, str) or not _TOKEN.match(value):
                        return f"x-mcp-header {value!r} is not a header name"
                    if value.lower() in names:
                        return f"x-mcp-header {value!r} repeats"
                    names.add(value.lower())
                    if node.get("type") not in ("string", "integer", "boolean"):
                        return f"x-mcp-header {value!r} on a {node.get('type')!r} property"
                elif key == "properties" and isinstance(value, dict):
                    children += [(sub, True, plain_path) for sub in value.values()]
                else:
                    children.append((value, False, False))
        for child in children:
            if (problem := walk(*child)) is not None:
                return problem
        return None

    return walk(schema, False, True)


# Servers that answered a 2026-07-28 request as servers of an earlier revision do (the transport's
# backward compatibility): their URL -> the session of the handshake made with them, for the process.
_HANDSHAKE_VERSION = "2025-11-25"
_HANDSHAKE_VERSIONS = frozenset({"2025-03-26", "2025-06-18", "2025-11-25"})
# errors only a modern server answers with: HeaderMismatch, MissingRequiredClientCapability,
# UnsupportedProtocolVersion, Method not found
_MODERN_ERRORS = frozenset({-32020, -32021, -32022, -32601})


@dataclass(frozen=True, slots=True)
class _Session:
    version: str
    session_id: str | None

    def headers(self) -> dict[str, str]:
        headers = {"MCP-Protocol-Version": self.version}
        if self.session_id is not None:
            headers["Mcp-Session-Id"] = self.session_id
        return headers


_sessions: dict[str, _Session] = {}


class _NotModern(Exception):
    """The server answered a 2026-07-28 request as a server of an earlier revision does."""


class _SessionGone(Exception):
    """The server no longer knows the session of an earlier revision's handshake (HTTP 404)."""


class McpClient:
    """JSON-RPC requests to one MCP server over streamable HTTP: revision 2026-07-28, or, for a server
    that answers as one of the revisions before it, the ``initialize`` handshake and its session."""

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str] | None = None,
        *,
        client: httpx.AsyncClient | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        self.url = url
        self._headers = dict(headers or {})
        self._client = client
        self._connect_timeout = connect_timeout
        self._ids = itertools.count(1)

    async def list_tools(self) -> list[dict[str, Any]]:
        """Every tool the server offers (all pages of ``tools/list``)."""
        tools: list[dict[str, Any]] = []
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(_MAX_PAGES):
            result = await self.request("tools/list", {} if cursor is None else {"cursor": cursor})
            page = result.get("tools")
            if not isinstance(page, list):
                raise McpError("tools/list answered without a tools list")
            tools.extend(t for t in page if isinstance(t, dict) and isinstance(t.get("name"), str))
            cursor = result.get("nextCursor")
            if not isinstance(cursor, str) or not cursor or cursor in seen:
                return tools
            seen.add(cursor)
        return tools

    async def call_tool(
        self, name: str, arguments: Mapping[str, Any], schema: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The ``CallToolResult`` of ``tools/call`` (``isError`` results included: the caller decides)."""
        headers = {"Mcp-Name": _header_value(name), **_param_headers(schema or {}, arguments)}
        return await self.request("tools/call", {"name": name, "arguments": dict(arguments)}, headers)

    async def request(
        self, method: str, params: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        session = _sessions.get(self.url)
        if session is None:
            meta = {
                "io.modelcontextprotocol/protocolVersion": PROTOCOL_VERSION,
                "io.modelcontextprotocol/clientInfo": _CLIENT_INFO,
                "io.modelcontextprotocol/clientCapabilities": {},
            }
            modern = {"MCP-Protocol-Version": PROTOCOL_VERSION, "Mcp-Method": method, **(headers or {})}
            try:
                message, _ = await self._post(method, {**params, "_meta": meta}, modern, probe=True)
                return _result(method, message)
            except _NotModern:
                session = await self._initialize()
        try:
            message, _ = await self._post(method, params, session.headers(), session=True)
        except _SessionGone:  # the server forgot the session (restarted, expired): a new one, once
            session = await self._initialize()
            message, _ = await self._post(method, params, session.headers())
        return _result(method, message)

    async def _initialize(self) -> _Session:
        """The handshake of the revisions before 2026-07-28, for a server that speaks only those."""
        params = {"protocolVersion": _HANDSHAKE_VERSION, "capabilities": {}, "clientInfo": _CLIENT_INFO}
        message, headers = await self._post("initialize", params, {})
        version = _result("initialize", message).get("protocolVersion")
        if version not in _HANDSHAKE_VERSIONS:
            raise McpError(f"initialize: the server speaks {version!r}, which agentstream does not")
        session = _Session(str(version), headers.get("mcp-session-id"))
        await self._post("notifications/initialized", None, session.headers())
        _sessions[self.url] = session
        return session

    async def _post(
        self,
        method: str,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str],
        *,
        probe: bool = False,
        session: bool = False,
    ) -> tuple[Any, httpx.Headers]:
        """One JSON-RPC message as one POST: a request's response (JSON or from an event stream), or
        None for a notification. ``probe``: a modern request, ``_NotModern`` when the server answers
        as one of an earlier revision; ``session``: ``_SessionGone`` when the server forgot it."""
        body: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            body["id"] = request_id = next(self._ids)
            body["params"] = params
        sent = {
            **self._headers,
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            **headers,
        }
        client = self._client if self._client is not None else _shared_client()
        # no read timeout: a tool may think for a while; the caller bounds the whole call
        timeout = httpx.Timeout(None, connect=self._connect_timeout)
        try:
            async with client.stream(
                "POST", self.url, content=json.dumps(body).encode(), headers=sent, timeout=timeout
            ) as response:
                status = response.status_code
                if params is None and status in (200, 202):
                    return None, response.headers
                kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if kind == "text/event-stream" and status == 200:
                    return await _read_stream(response, request_id), response.headers
                data = await _read_body(response)
        except httpx.HTTPError as e:
            raise McpError(f"{method}: {_transport_message(e)}") from e
        try:
            message = json.loads(data)
        except ValueError:
            message = None
        error = message.get("error") if isinstance(message, dict) else None
        modern_error = isinstance(error, dict) and error.get("code") in _MODERN_ERRORS
        if probe and status in (400, 404, 405) and not modern_error:
            raise _NotModern
        if session and status == 404:
            raise _SessionGone
        if isinstance(error, dict):
            return message, response.headers  # a JSON-RPC error, whatever the status (400, 404, ...)
        if status != 200 or not isinstance(message, dict):
            excerpt = data[:200].decode("utf-8", "replace")
            raise McpError(f"{method}: HTTP {status}" + (f": {excerpt}" if excerpt else ""))
        return message, response.headers


async def _read_body(response: httpx.Response) -> bytes:
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) > _MAX_RESPONSE_BYTES:
            raise McpError(f"answer larger than {_MAX_RESPONSE_BYTES} bytes")
    return bytes(data)


async def _read_stream(response: httpx.Response, request_id: int) -> Any:
    """The response to ``request_id`` from an SSE stream (notifications before it are skipped)."""
    decoder = SSEDecoder()
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > _MAX_RESPONSE_BYTES:
            raise McpError(f"answer larger than {_MAX_RESPONSE_BYTES} bytes")
        for event in decoder.feed(chunk):
            if event.event != "message" or not event.data:
                continue
            try:
                message = json.loads(event.data)
            except ValueError as e:
                raise McpError("malformed JSON in the server's event stream") from e
            if isinstance(message, dict) and message.get("id") == request_id and "method" not in message:
                return message
    raise McpError("the server's event stream ended without a response")


def _result(method: str, message: Any) -> dict[str, Any]:
    error = message.get("error")
    if isinstance(error, dict):
        text = f"{method}: MCP error {error.get('code')}: {str(error.get('message', ''))[:300]}"
        data = error.get("data")
        if error.get("code") == -32022 and isinstance(data, dict):  # UnsupportedProtocolVersion
            text += f" (the server speaks {data.get('supported')}; agentstream speaks {PROTOCOL_VERSION})"
        raise McpError(text)
    result = message.get("result")
    if not isinstance(result, dict):
        raise McpError(f"{method}: the answer holds no result")
    if result.get("resultType", "complete") != "complete":
        kind = result.get("resultType")
        raise McpError(f"{method}: the server asked for input ({kind}), which an agent cannot give")
    return result


def _transport_message(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "cannot connect to the server"
    if isinstance(exc, httpx.TimeoutException):
        return "the server did not answer in time"
    return f"{type(exc).__name__} talking to the server"


def result_text(result: Mapping[str, Any]) -> str:
    """What the model sees of a ``CallToolResult``: its text blocks, joined; other blocks named."""
    parts: list[str] = []
    content = result.get("content")
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append(block["text"])
        elif kind == "resource" and isinstance(block.get("resource"), dict):
            resource = block["resource"]
            text = resource.get("text")
            parts.append(text if isinstance(text, str) else f"[resource {resource.get('uri')}]")
        elif kind == "resource_link":
            parts.append(f"[resource {block.get('uri')}]")
        elif kind in ("image", "audio"):
            parts.append(f"[{kind} {block.get('mimeType', '')}]".replace(" ]", "]"))
    if not parts and "structuredContent" in result:
        parts.append(json.dumps(result["structuredContent"], ensure_ascii=False))
    return "\n".join(parts)


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n[cut: {len(text) - limit} more characters]"


# --- the run's tools ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Listing:
    expires: float
    tools: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


_listings: dict[str, _Listing] = {}
_inflight: dict[tuple[asyncio.AbstractEventLoop, str], asyncio.Task[_Listing]] = {}


def clear_cache() -> None:
    """Forget every tool list and session (tests; a process normally keeps them)."""
    _listings.clear()
    _sessions.clear()


async def _headers(name: str, server: McpServer, settings: Settings) -> dict[str, str]:
    if server.headers_secret_arn is None:
        return settings.mcp_headers(name)
    from agentstream.secrets import get_secret

    return parse_headers(await get_secret(server.headers_secret_arn), f"the secret of MCP server {name!r}")


async def _list(name: str, server: McpServer, settings: Settings) -> _Listing:
    try:
        async with asyncio.timeout(settings.mcp_list_timeout_seconds):
            client = McpClient(server.url, await _headers(name, server, settings))
            tools = await client.list_tools()
    except (McpError, ValueError) as e:
        error = str(e)
    except TimeoutError:
        error = f"tools/list: no answer within {settings.mcp_list_timeout_seconds:g} s"
    except Exception as e:  # a secret that cannot be read, anything unforeseen: not the run's failure
        logger.exception("MCP server %s: tools/list failed", name)
        error = f"tools/list failed ({type(e).__name__})"
    else:
        return _Listing(time.monotonic() + settings.mcp_list_ttl_seconds, tools)
    logger.warning("MCP server %s unavailable: %s", name, error)
    return _Listing(time.monotonic() + _FAILED_LIST_TTL_SECONDS, error=error)


async def _listing(name: str, server: McpServer, settings: Settings) -> _Listing:
    """The server's cached tool list, fetched when missing or stale (once, however many runs ask)."""
    cached = _listings.get(name)
    if cached is not None and cached.expires > time.monotonic():
        return cached
    key = (asyncio.get_running_loop(), name)
    task = _inflight.get(key)
    if task is None:
        task = _inflight[key] = asyncio.create_task(_list(name, server, settings))
        task.add_done_callback(lambda _: _inflight.pop(key, None))
    listing = await asyncio.shield(task)
    _listings[name] = listing
    return listing


def _tool(
    client_of: Callable[[], Awaitable[McpClient]], spec: ToolSpec, tool: Mapping[str, Any], settings: Settings
) -> Tool:
    original = str(tool["name"])
    schema = tool.get("inputSchema") if isinstance(tool.get("inputSchema"), dict) else None

    async def run(arguments: Mapping[str, Any]) -> str:
        limit = settings.mcp_call_timeout_seconds
        try:
            async with asyncio.timeout(limit):
                client = await client_of()
                result = await client.call_tool(original, arguments, schema)
        except TimeoutError as e:
            raise ToolFailed(f"the MCP tool did not answer within {limit:g} s") from e
        except McpError as e:
            raise ToolFailed(str(e)) from e
        text = _cut(result_text(result), settings.mcp_result_max_chars)
        if result.get("isError") is True:
            raise ToolFailed(text or "the MCP tool failed")
        return text

    return Tool(spec, run)


async def run_tools(entries: Sequence[str], settings: Settings) -> RunTools:
    """The MCP tools an agent's ``tools`` entries name (``mcp:<server>``, ``mcp:<server>/<tool>``)."""
    wanted: dict[str, set[str] | None] = {}  # server -> tool names (None: all of them)
    for entry in entries:
        split = split_tool_entry(entry)
        if split is None:
            continue
        server_name, tool_name = split
        if tool_name is None:
            wanted[server_name] = None
        elif server_name not in wanted or wanted[server_name] is not None:
            wanted.setdefault(server_name, set()).add(tool_name)  # type: ignore[union-attr]
    unavailable: dict[str, str] = {}
    configured = {name: settings.mcp_servers[name] for name in wanted if name in settings.mcp_servers}
    for name in sorted(wanted.keys() - configured.keys()):
        unavailable[name] = "not configured in AGENTSTREAM_MCP_SERVERS"
    listings = await asyncio.gather(*(_listing(n, s, settings) for n, s in configured.items()))
    tools: dict[str, Tool] = {}
    for (name, server), listing in zip(configured.items(), listings, strict=True):
        if listing.error is not None:
            unavailable[name] = listing.error
            continue
        allowed = wanted[name]
        offered = [t for t in listing.tools if allowed is None or t["name"] in allowed]
        if missing := sorted((allowed or set()) - {t["name"] for t in offered}):
            unavailable[f"{name}/{','.join(missing)}"] = "no such tool on the server"
        tools.update(_server_tools(name, server, offered, settings))
    return RunTools(tools, unavailable)


def _server_tools(
    name: str, server: McpServer, offered: list[dict[str, Any]], settings: Settings
) -> dict[str, Tool]:
    async def client_of() -> McpClient:
        # headers from a secret are cached by secrets.py, so a rotation reaches later calls
        return McpClient(server.url, await _headers(name, server, settings))

    tools: dict[str, Tool] = {}
    for tool in sorted(offered, key=lambda t: str(t["name"])):
        if (problem := header_annotation_problem(tool.get("inputSchema"))) is not None:
            logger.warning("MCP server %s: tool %r left out: %s", name, tool["name"], problem)
            continue
        model_name = model_tool_name(name, str(tool["name"]), tools.keys())
        description = tool.get("description") or tool.get("title") or str(tool["name"])
        schema = tool.get("inputSchema")
        parameters = schema if isinstance(schema, dict) else {"type": "object", "properties": {}}
        spec = ToolSpec(model_name, str(description), parameters)
        tools[model_name] = _tool(client_of, spec, tool, settings)
    return tools
