"""The MCP client (streamable HTTP, revision 2026-07-28) over httpx's MockTransport, the names the
model sees, the settings, and where the tool lists are fetched in a run's start."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from agentstream.config import McpServer, Settings
from agentstream.core import mcp
from agentstream.core.agents import Agent, AgentSpec, ModelConfig
from agentstream.core.events import Done, Metadata
from agentstream.core.mcp import McpClient, McpError, model_tool_name, result_text
from agentstream.core.service import ChatInput, ChatService
from tests.support.memory_store import MemoryStore

pytestmark = pytest.mark.anyio

URL = "http://mcp.test/mcp"


def _client(handler: Callable[[httpx.Request], httpx.Response]) -> McpClient:
    return McpClient(
        URL, {"X-Api-Key": "k"}, client=httpx.AsyncClient(transport=httpx.MockTransport(handler))
    )


def _answer(request: httpx.Request, result: Any) -> httpx.Response:
    return httpx.Response(
        200, json={"jsonrpc": "2.0", "id": json.loads(request.content)["id"], "result": result}
    )


async def test_a_request_carries_the_revision_s_metadata_in_body_and_headers() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return _answer(request, {"content": [{"type": "text", "text": "ok"}], "isError": False})

    schema = {
        "type": "object",
        "properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "where": {"type": "object", "properties": {"city": {"type": "string", "x-mcp-header": "City"}}},
            "dry": {"type": "boolean", "x-mcp-header": "Dry"},
        },
    }
    await _client(handler).call_tool(
        "天气", {"region": "us-west1", "where": {"city": "北京"}, "dry": True}, schema
    )
    (request,) = sent
    body = json.loads(request.content)
    assert body["jsonrpc"] == "2.0"
    assert body["method"] == "tools/call"
    assert body["params"]["name"] == "天气"
    assert body["params"]["arguments"] == {"region": "us-west1", "where": {"city": "北京"}, "dry": True}
    meta = body["params"]["_meta"]
    assert meta["io.modelcontextprotocol/protocolVersion"] == "2026-07-28"
    assert meta["io.modelcontextprotocol/clientInfo"]["name"] == "agentstream"
    assert meta["io.modelcontextprotocol/clientCapabilities"] == {}
    headers = request.headers
    assert headers["mcp-protocol-version"] == "2026-07-28"
    assert headers["mcp-method"] == "tools/call"
    assert headers["mcp-name"] == "=?base64?" + base64.b64encode("天气".encode()).decode() + "?="
    assert headers["mcp-param-region"] == "us-west1"
    assert headers["mcp-param-city"] == "=?base64?" + base64.b64encode("北京".encode()).decode() + "?="
    assert headers["mcp-param-dry"] == "true"
    assert set(headers["accept"].replace(" ", "").split(",")) == {"application/json", "text/event-stream"}
    assert headers["content-type"] == "application/json"
    assert headers["x-api-key"] == "k"
    assert "mcp-session-id" not in headers


@pytest.mark.parametrize(
    ("value", "plain"),
    [
        ("us-west1", True),
        ("Hello, 世界", False),
        (" padded ", False),
        ("a\nb", False),
        ("=?base64?x?=", False),
    ],
)
def test_header_values_that_are_not_plain_ascii_are_base64_sentinels(value: str, plain: bool) -> None:
    encoded = mcp._header_value(value)
    if plain:
        assert encoded == value
    else:
        assert encoded.startswith("=?base64?")
        assert encoded.endswith("?=")
        assert base64.b64decode(encoded[9:-2]).decode() == value


async def test_an_event_stream_answer_skips_notifications_and_keeps_characters_whole() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        request_id = json.loads(request.content)["id"]
        progress = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}
        response = {
            "jsonrpc": "2.0",
            "id": request_id,
            "result": {"content": [{"type": "text", "text": "你好 👋"}]},
        }
        body = (
            ": ping\r\n\r\n"
            f"event: message\r\ndata: {json.dumps(progress)}\r\n\r\n"
            f"event: message\r\ndata: {json.dumps(response, ensure_ascii=False)}\r\n\r\n"
        ).encode()
        # one byte at a time: every character is split across reads
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=_bytewise(body))

    result = await _client(handler).call_tool("greet", {})
    assert result_text(result) == "你好 👋"


def _bytewise(body: bytes) -> Any:
    async def chunks() -> Any:
        for i in range(len(body)):
            yield body[i : i + 1]

    return chunks()


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (
            httpx.Response(
                404,
                json={"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "Method not found"}},
            ),
            "MCP error -32601: Method not found",
        ),
        (
            httpx.Response(
                400,
                json={
                    "jsonrpc": "2.0",
                    "id": 1,
                    "error": {
                        "code": -32022,
                        "message": "Unsupported protocol version",
                        "data": {"supported": ["2025-11-25"], "requested": "2026-07-28"},
                    },
                },
            ),
            "the server speaks ['2025-11-25']; agentstream speaks 2026-07-28",
        ),
        (httpx.Response(500, text="boom"), "HTTP 500: boom"),
        (
            httpx.Response(200, headers={"content-type": "text/event-stream"}, text=": ping\n\n"),
            "ended without",
        ),
        (
            httpx.Response(
                200,
                json={
                    "jsonrpc": "2.0",
                    "id": 1,
                    "result": {"resultType": "input_required", "requestState": "s"},
                },
            ),
            "asked for input",
        ),
    ],
    ids=["method-not-found", "unsupported-version", "http-500", "no-response", "input-required"],
)
async def test_failures_are_mcp_errors_with_a_clear_message(response: httpx.Response, message: str) -> None:
    with pytest.raises(McpError, match=message.replace("[", r"\[").replace("]", r"\]")):
        await _client(lambda _: response).call_tool("t", {})


async def test_a_server_that_cannot_be_reached_is_an_mcp_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(McpError, match="cannot connect"):
        await _client(handler).list_tools()


async def test_tools_list_reads_every_page() -> None:
    cursors: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        params = json.loads(request.content)["params"]
        cursors.append(params.get("cursor"))
        page = {None: ({"name": "a"}, "p2"), "p2": ({"name": "b"}, "p3"), "p3": ({"name": "c"}, None)}
        tool, after = page[params.get("cursor")]
        return _answer(request, {"tools": [tool], **({"nextCursor": after} if after else {})})

    assert [t["name"] for t in await _client(handler).list_tools()] == ["a", "b", "c"]
    assert cursors == [None, "p2", "p3"]


def test_result_text_names_what_is_not_text() -> None:
    result = {
        "content": [
            {"type": "text", "text": "one"},
            {"type": "image", "data": "...", "mimeType": "image/png"},
            {"type": "resource", "resource": {"uri": "file:///a", "text": "inline"}},
            {"type": "resource_link", "uri": "file:///b", "name": "b"},
        ]
    }
    assert result_text(result) == "one\n[image image/png]\ninline\n[resource file:///b]"
    assert result_text({"content": [], "structuredContent": {"n": 1}}) == '{"n": 1}'


def test_model_tool_names_are_valid_deterministic_and_distinct() -> None:
    import re

    valid = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
    assert model_tool_name("github", "create_issue") == "mcp__github__create_issue"
    odd = ["files.read", "files/read", "files read", "查询", "x" * 100, "y" * 100]
    names = [model_tool_name("fs", tool) for tool in odd]
    assert all(valid.match(n) for n in names)
    assert len(set(names)) == len(names)
    assert names == [model_tool_name("fs", tool) for tool in odd]  # the same every time
    assert "files_read" in names[0]
    # a name already taken (a tool literally called like another's cleaned-up form) gets a longer hash
    taken = {names[0]}
    other = model_tool_name("fs", "files.read", taken)
    assert other != names[0]
    assert valid.match(other)


def test_settings_check_the_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    def settings(servers: dict[str, Any]) -> Settings:
        monkeypatch.setenv("AGENTSTREAM_MCP_SERVERS", json.dumps(servers))
        return Settings()

    monkeypatch.setenv("GH_HEADERS", json.dumps({"Authorization": "Bearer t"}))
    ok = settings({"github": {"url": "https://gh.example/mcp", "headers_env": "GH_HEADERS"}})
    assert ok.mcp_headers("github") == {"Authorization": "Bearer t"}
    assert "Bearer t" not in repr(ok)
    for bad in (
        {"a__b": {"url": "https://x.example/mcp"}},
        {"x": {"url": "file:///etc/passwd"}},
        {"x": {"url": "https://x.example/mcp", "headers_env": "NOT_SET_ANYWHERE"}},
        {"x": {"url": "https://x.example/mcp", "headers_env": "GH_HEADERS", "headers_secret_arn": "arn"}},
        {"x": {"url": "https://x.example/mcp", "token": "t"}},
    ):
        with pytest.raises(ValidationError):
            settings(bad)
    monkeypatch.setenv("GH_HEADERS", "not json")
    with pytest.raises(ValidationError, match="JSON object"):
        settings({"github": {"url": "https://gh.example/mcp", "headers_env": "GH_HEADERS"}})


def test_agents_name_registered_servers_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from agentstream.config import get_settings

    monkeypatch.setenv("AGENTSTREAM_MCP_SERVERS", json.dumps({"gh": {"url": "https://gh.example/mcp"}}))
    get_settings.cache_clear()
    model = ModelConfig(provider="scripted", name="s")
    assert AgentSpec(name="a", model=model, tools=["mcp:gh", "mcp:gh/create_issue"]).tools
    for tools in (["mcp:other"], ["mcp:"], ["mcp:gh/"], ["mcp:gh", "mcp:gh"]):
        with pytest.raises(ValidationError):
            AgentSpec(name="a", model=model, tools=tools)
    # a stored agent stays readable when its server is no longer configured
    assert Agent(id="a", name="a", model=model, tools=["mcp:gone"], created_at="", updated_at="").tools


def _store(tools: list[str]) -> MemoryStore:
    store = MemoryStore()
    model = ModelConfig(provider="scripted", name="s", options={"reply": "ok", "delay_ms": 0})
    store.agents.items[("t", "agt_1")] = Agent(
        id="agt_1", name="a", model=model, tools=tools, created_at="", updated_at=""
    )
    return store


async def test_tool_lists_are_fetched_beside_the_other_start_up_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def slow_list(name: str, server: Any, settings: Any) -> Any:
        await asyncio.sleep(0.2)
        return mcp._Listing(time.monotonic() + 60, [{"name": "echo", "inputSchema": {"type": "object"}}])

    monkeypatch.setattr(mcp, "_list", slow_list)
    mcp.clear_cache()
    monkeypatch.setenv("AGENTSTREAM_MCP_SERVERS", json.dumps({"gh": {"url": "https://gh.example/mcp"}}))
    store = _store(["mcp:gh", "mcp:gone"])
    store.runs.latency = 0.2  # the run record's write takes as long as the list
    chat = ChatService(store, Settings(log_flush_seconds=5, heartbeat_seconds=5))
    started = time.monotonic()
    run = await chat.start("t", "agt_1", ChatInput("hi"))
    assert time.monotonic() - started < 0.35  # not one after the other
    events = [e async for _, e in run.events()]
    await run.wait()
    mcp.clear_cache()
    # the server that is not configured (any more) is said, and the run goes on
    notes = [e.data for e in events if isinstance(e, Metadata)]
    assert notes == [{"mcp_unavailable": {"gone": "not configured in AGENTSTREAM_MCP_SERVERS"}}]
    assert isinstance(events[-1], Done)
    assert events[-1].status == "completed"


@pytest.mark.parametrize(
    ("properties", "valid"),
    [
        ({"region": {"type": "string", "x-mcp-header": "Region"}}, True),
        ({"o": {"type": "object", "properties": {"n": {"type": "integer", "x-mcp-header": "N"}}}}, True),
        ({"xs": {"type": "array", "items": {"type": "string", "x-mcp-header": "X"}}}, False),
        ({"v": {"anyOf": [{"type": "string", "x-mcp-header": "V"}]}}, False),
        ({"f": {"type": "number", "x-mcp-header": "F"}}, False),
        (
            {"a": {"type": "string", "x-mcp-header": "Dup"}, "b": {"type": "string", "x-mcp-header": "dup"}},
            False,
        ),
        ({"s": {"type": "string", "x-mcp-header": "Not a token"}}, False),
        ({"s": {"type": "string", "x-mcp-header": ""}}, False),
    ],
    ids=["top", "nested", "in-items", "in-anyOf", "number", "repeated", "space", "empty"],
)
def test_tools_with_invalid_header_annotations_are_left_out(properties: dict[str, Any], valid: bool) -> None:
    schema = {"type": "object", "properties": properties}
    assert (mcp.header_annotation_problem(schema) is None) is valid
    offered = [{"name": "t", "inputSchema": schema}, {"name": "plain", "inputSchema": {"type": "object"}}]
    tools = mcp._server_tools("s", McpServer(url=URL), offered, Settings())
    assert set(tools) == ({"mcp__s__t", "mcp__s__plain"} if valid else {"mcp__s__plain"})


async def test_a_server_of_an_earlier_revision_gets_the_handshake_and_its_session() -> None:
    """The transport's backward compatibility: a modern request answered 400 without a modern error
    means a handshake-era server; its session is used from then on, and renewed when it is gone."""
    seen: list[tuple[str, str | None, str | None]] = []
    sessions = iter(["s1", "s2"])
    current: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        session = request.headers.get("mcp-session-id")
        seen.append((body["method"], session, request.headers.get("mcp-protocol-version")))
        if body["method"] == "initialize":
            assert body["params"]["protocolVersion"] == "2025-11-25"
            current[:] = [next(sessions)]
            result = {
                "protocolVersion": "2025-06-18",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "x"},
            }
            return httpx.Response(
                200,
                json={"jsonrpc": "2.0", "id": body["id"], "result": result},
                headers={"mcp-session-id": current[0]},
            )
        if session is None:
            error = {"code": -32600, "message": "Bad Request: Missing session ID"}
            return httpx.Response(400, json={"jsonrpc": "2.0", "id": "server-error", "error": error})
        if session != current[0]:
            return httpx.Response(404, text="Not Found: Invalid or expired session ID")
        if body["method"] == "notifications/initialized":
            return httpx.Response(202)
        assert "_meta" not in body["params"]
        return _answer(request, {"tools": [{"name": "old", "inputSchema": {"type": "object"}}]})

    mcp.clear_cache()
    assert [t["name"] for t in await _client(handler).list_tools()] == ["old"]
    assert [t["name"] for t in await _client(handler).list_tools()] == ["old"]  # no new handshake
    current[:] = ["expired"]  # the server restarted
    assert [t["name"] for t in await _client(handler).list_tools()] == ["old"]
    mcp.clear_cache()
    assert seen == [
        ("tools/list", None, "2026-07-28"),
        ("initialize", None, None),
        ("notifications/initialized", "s1", "2025-06-18"),
        ("tools/list", "s1", "2025-06-18"),
        ("tools/list", "s1", "2025-06-18"),
        ("tools/list", "s1", "2025-06-18"),
        ("initialize", None, None),
        ("notifications/initialized", "s2", "2025-06-18"),
        ("tools/list", "s2", "2025-06-18"),
    ]


async def test_the_handshake_works_with_the_official_sdk_server() -> None:
    from tests.fakes.mcp_server import GREETING, McpTestServer

    mcp.clear_cache()
    with McpTestServer() as server:
        async with httpx.AsyncClient() as http:
            client = McpClient(server.url, client=http)
            await client._initialize()  # as after a modern request refused
            result = await client.call_tool("greet", {"name": "旧版"})
            assert result_text(result) == GREETING.format(name="旧版")
    mcp.clear_cache()
    methods = [h.get("mcp-method") for h in server.headers]
    assert methods == [None, None, None]  # handshake-era requests carry no modern headers
    assert server.headers[0].get("mcp-session-id") is None
    assert server.headers[1]["mcp-session-id"] == server.headers[2]["mcp-session-id"]
