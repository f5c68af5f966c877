"""The streaming ASGI cycle: Mangum's event parsing, our streaming of the app's response."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
from typing import Any

import pytest

from agentstream.handlers import _asgi
from agentstream.handlers._asgi import MAX_QUEUED_MESSAGES, AsgiCycle, UnsupportedEvent, run_on_thread_loop
from tests.conftest import load_event
from tests.unit.handlers.lambda_contexts import PlainContext
from tests.unit.handlers.streaming_test_app import BINARY, app, raw_failing_app

pytestmark = pytest.mark.anyio


def event(name: str, **changes: Any) -> dict[str, Any]:
    data = load_event(name)
    data.update(changes)
    return data


def url_event(method: str, path: str, query: str = "", body: str | None = None) -> dict[str, Any]:
    data = load_event("function_url_v2.json")
    data.update(rawPath=path, rawQueryString=query, body=body)
    data["requestContext"]["http"].update(method=method, path=path)
    return data


def sse_events(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in body.decode().splitlines() if line.startswith("data: ")]


async def collect(cycle: AsgiCycle) -> tuple[dict[str, Any], list[tuple[bytes, float]]]:
    items = [(item, time.monotonic()) async for item in cycle.stream()]
    prelude = items[0][0]
    assert isinstance(prelude, dict)
    return prelude, [(item, at) for item, at in items[1:] if isinstance(item, bytes)]


async def test_function_url_stream_yields_prelude_then_each_event_as_sent() -> None:
    data = event("function_url_v2.json")
    data["rawQueryString"] = "count=4&interval=0.1"
    prelude, chunks = await collect(AsgiCycle(app, data, PlainContext()))

    assert prelude["statusCode"] == 200
    assert "multiValueHeaders" not in prelude
    assert prelude["headers"]["content-type"] == "text/event-stream; charset=utf-8"
    assert prelude["headers"]["x-accel-buffering"] == "no"
    assert prelude["headers"]["x-run-id"] == "run-1"
    assert [cookie.split(";")[0] for cookie in prelude["cookies"]] == ["seen=1", "tenant=default"]
    events = [sse_events(chunk)[0] for chunk, _ in chunks]
    assert [e["chunk_type"] for e in events] == ["start", "content", "content", "content", "content", "done"]
    assert events[0]["remaining_ms"] == 30_000  # the app reads the deadline from scope["aws.context"]
    assert {e.get("content") for e in events[1:-1]} == {"你好"}
    # One item per send, handed over at once: arrivals follow the app's 100 ms pauses.
    for (chunk, at), e in zip(chunks, events, strict=True):
        assert at - e["t"] < 0.02, chunk
    arrivals = [at for _, at in chunks]
    # (the done event follows the last content event without a pause)
    assert all(b - a > 0.05 for a, b in itertools.pairwise(arrivals[:-1]))


async def test_rest_prelude_keeps_multi_value_headers() -> None:
    data = event(
        "rest_proxy.json", queryStringParameters={"interval": "0"}, multiValueQueryStringParameters=None
    )
    prelude, chunks = await collect(AsgiCycle(app, data, PlainContext()))

    assert prelude["statusCode"] == 200
    assert prelude["headers"]["content-type"] == "text/event-stream; charset=utf-8"
    assert [c.split(";")[0] for c in prelude["multiValueHeaders"]["set-cookie"]] == [
        "seen=1",
        "tenant=default",
    ]
    assert prelude["cookies"] == []
    assert sse_events(b"".join(chunk for chunk, _ in chunks))[-1]["chunk_type"] == "done"


@pytest.mark.parametrize("name", ["function_url_v2.json", "rest_proxy.json", "http_api_v2.json"])
async def test_request_reaches_the_app_as_mangum_parses_it(name: str) -> None:
    data = event(name)
    if "rawPath" in data:
        data["rawPath"] = data["requestContext"]["http"]["path"] = "/echo"
    else:
        data["path"] = "/echo"
    _, chunks = await collect(AsgiCycle(app, data, PlainContext()))
    echoed = json.loads(b"".join(chunk for chunk, _ in chunks))

    assert echoed["method"] == "POST"
    assert echoed["path"] == "/echo"
    assert json.loads(echoed["body"]) == {"message": "你好", "user_id": "test"}
    assert echoed["authorization"] == "Bearer test-token"
    if name == "function_url_v2.json":
        assert echoed["query"] == "trace=1"
        assert echoed["cookie"] == "theme=dark; lang=zh"


async def test_base64_request_body_is_decoded() -> None:
    data = url_event("POST", "/echo", body=base64.b64encode("二进制".encode()).decode())
    data["isBase64Encoded"] = True
    _, chunks = await collect(AsgiCycle(app, data, PlainContext()))
    assert json.loads(b"".join(chunk for chunk, _ in chunks))["body"] == "二进制"


async def test_binary_body_streams_as_raw_bytes() -> None:
    prelude, chunks = await collect(AsgiCycle(app, url_event("GET", "/binary"), PlainContext()))
    assert prelude["headers"]["content-type"] == "application/octet-stream"
    assert b"".join(chunk for chunk, _ in chunks) == BINARY


async def test_error_before_the_response_comes_out_before_the_prelude() -> None:
    stream = AsgiCycle(raw_failing_app, url_event("GET", "/"), PlainContext()).stream()
    with pytest.raises(LookupError, match="no response at all"):
        await anext(stream)


async def test_error_mid_body_comes_out_after_the_bytes_sent() -> None:
    stream = AsgiCycle(app, url_event("GET", "/raise-mid-body"), PlainContext()).stream()
    prelude = await anext(stream)
    assert isinstance(prelude, dict)
    assert prelude["statusCode"] == 200
    assert await anext(stream) == b"data: partial\n\n"
    with pytest.raises(RuntimeError, match="failed mid-body"):
        await anext(stream)


async def test_error_after_a_complete_response_is_only_logged(caplog: pytest.LogCaptureFixture) -> None:
    # FastAPI's error middleware answers 500, then re-raises: the client already has its answer.
    prelude, chunks = await collect(AsgiCycle(app, url_event("GET", "/raise-before-start"), PlainContext()))
    assert prelude["statusCode"] == 500
    assert b"".join(chunk for chunk, _ in chunks) == b"Internal Server Error"
    assert "after its response was complete" in caplog.text


async def test_receive_gives_disconnect_only_when_the_response_ends() -> None:
    seen: list[dict[str, Any]] = []

    async def waiting_app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(await receive())
        await send(
            {"type": "http.response.start", "status": 200, "headers": [[b"content-type", b"text/plain"]]}
        )
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        seen.append(await receive())

    stream = AsgiCycle(waiting_app, url_event("POST", "/", body="hi"), PlainContext()).stream()
    assert isinstance(await anext(stream), dict)
    assert await anext(stream) == b"first"
    await asyncio.sleep(0.05)
    assert [m["type"] for m in seen] == ["http.request"]
    assert seen[0]["body"] == b"hi"
    await stream.aclose()  # the transport gives up: the app hears about it and ends on its own
    assert [m["type"] for m in seen] == ["http.request", "http.disconnect"]


async def test_closing_the_stream_cancels_an_app_that_does_not_listen() -> None:
    cancelled = asyncio.Event()

    async def deaf_app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            while True:
                await send({"type": "http.response.body", "body": b".", "more_body": True})
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    stream = AsgiCycle(deaf_app, url_event("GET", "/"), PlainContext()).stream()
    assert isinstance(await anext(stream), dict)
    await stream.aclose()
    assert cancelled.is_set()


class CountingApp:
    """Sends ``total`` numbered lines as fast as ``send()`` lets it; counts the sends that returned."""

    def __init__(self, total: int | None) -> None:
        self.total = total
        self.sent = 0
        self.returned = False
        self.cancelled = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            for number in itertools.count() if self.total is None else range(self.total):
                await send({"type": "http.response.body", "body": b"%d\n" % number, "more_body": True})
                self.sent += 1
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        self.returned = True


async def settle() -> None:
    """Let every task run until it waits for something (a send takes a loop turn or two at most)."""
    for _ in range(200):
        await asyncio.sleep(0)


async def blocked_sends(counting: CountingApp) -> int:
    """How many sends returned, once the app has stopped getting further (it waits in send())."""
    await settle()
    sent = counting.sent
    await settle()
    assert counting.sent == sent, "the app is still sending: it is not waiting for the transport"
    return sent


async def test_the_app_waits_in_send_while_the_transport_does_not_read() -> None:
    counting = CountingApp(1000)
    stream = AsgiCycle(counting, url_event("GET", "/"), PlainContext()).stream()
    assert isinstance(await anext(stream), dict)
    assert await anext(stream) == b"0\n"

    # One body message taken, then the transport stops reading: the app gets at most the queue ahead.
    assert await blocked_sends(counting) <= 1 + MAX_QUEUED_MESSAGES
    taken = [await anext(stream) for _ in range(10)]
    assert await blocked_sends(counting) <= 11 + MAX_QUEUED_MESSAGES

    # Reading again lets the app go on to the end, every line in order.
    rest = [item async for item in stream]
    assert b"".join([b"0\n", *taken, *rest]) == b"".join(b"%d\n" % n for n in range(1000))
    assert counting.returned


async def test_closing_the_stream_releases_an_app_waiting_in_send() -> None:
    counting = CountingApp(1000)
    stream = AsgiCycle(counting, url_event("GET", "/"), PlainContext()).stream()
    assert isinstance(await anext(stream), dict)
    await blocked_sends(counting)
    await stream.aclose()  # the transport gives up while the app waits for it
    # The rest went nowhere, but the app finished on its own instead of waiting to be cancelled.
    assert (counting.returned, counting.cancelled, counting.sent) == (True, False, 1000)


async def test_an_app_that_only_sends_is_cancelled_after_the_grace_period(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_asgi, "DISCONNECT_GRACE_SECONDS", 0.2)
    endless = CountingApp(None)  # never listens, never awaits anything but send()
    stream = AsgiCycle(endless, url_event("GET", "/"), PlainContext()).stream()
    assert isinstance(await anext(stream), dict)
    await blocked_sends(endless)
    async with asyncio.timeout(5):
        await stream.aclose()
    assert endless.cancelled


def test_buffered_response_is_mangums_proxy_response() -> None:
    data = event("function_url_v2.json")
    data["rawQueryString"] = "count=2&interval=0"
    response = run_on_thread_loop(AsgiCycle(app, data, PlainContext()).buffered())

    assert response["statusCode"] == 200
    assert response["isBase64Encoded"] is False
    assert response["headers"]["content-type"] == "text/event-stream; charset=utf-8"
    assert len(response["cookies"]) == 2
    assert [e["chunk_type"] for e in sse_events(response["body"].encode())] == [
        "start",
        "content",
        "content",
        "done",
    ]


def test_buffered_binary_response_is_base64() -> None:
    response = run_on_thread_loop(AsgiCycle(app, url_event("GET", "/binary"), PlainContext()).buffered())
    assert response["isBase64Encoded"] is True
    assert base64.b64decode(response["body"]) == BINARY


def test_rest_buffered_response_has_multi_value_headers() -> None:
    data = event("rest_proxy.json", queryStringParameters={"interval": "0", "count": "1"})
    data["multiValueQueryStringParameters"] = None
    response = run_on_thread_loop(AsgiCycle(app, data, PlainContext()).buffered())
    assert response["statusCode"] == 200
    assert len(response["multiValueHeaders"]["set-cookie"]) == 2


def test_other_events_are_refused() -> None:
    with pytest.raises(UnsupportedEvent):
        AsgiCycle(app, {"Records": []}, PlainContext())
