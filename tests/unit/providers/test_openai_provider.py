"""The openai provider against a real local HTTP server that plays scripted OpenAI-compatible streams."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import httpx
import pytest

from agentstream.core.events import Usage
from agentstream.core.providers.base import (
    Message,
    ModelRequest,
    ProviderEvent,
    StepEnd,
    TextChunk,
    ToolCallRequest,
    ToolSpec,
    UsageReport,
)
from agentstream.core.providers.openai import OpenAIProvider, shared_client
from agentstream.errors import UpstreamError, UpstreamTimeout
from tests.fakes.openai_upstream import FakeOpenAI, Reply

pytestmark = pytest.mark.anyio

# 3- and 4-byte characters, ZWJ family, flags, a combining accent (e + U+0301), Devanagari with marks.
TEXT = "你好，世界！👨‍👩‍👧‍👦 🇯🇵🇫🇷 café (cafe\u0301) नमस्ते ✓"
QUESTION = [Message(role="user", content="hi")]


def ask(**fields: Any) -> ModelRequest:
    return ModelRequest(model="glm-4-flash", messages=fields.pop("messages", QUESTION), **fields)


async def collect(provider: OpenAIProvider, request: ModelRequest | None = None) -> list[ProviderEvent]:
    return [event async for event in provider.stream(request or ask())]


async def collect_into(received: list[ProviderEvent], provider: OpenAIProvider) -> None:
    """Like collect, but what arrived before a failure stays in ``received``."""
    async for event in provider.stream(ask()):
        received.append(event)


def text_of(events: list[ProviderEvent]) -> str:
    return "".join(event.text for event in events if isinstance(event, TextChunk))


async def test_a_reply_streams_text_then_usage_then_step_end(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply.chat("Hello", ", world", usage=(12, 3)))
    events = await collect(OpenAIProvider(base_url=fake_openai.base_url))
    assert events == [
        TextChunk("Hello"),
        TextChunk(", world"),
        UsageReport(Usage(input_tokens=12, output_tokens=3)),
        StepEnd("stop"),
    ]


async def test_text_is_yielded_as_it_arrives_not_at_the_end(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply.chat("one ", "two ", "three", pause=0.4))
    provider = OpenAIProvider(base_url=fake_openai.base_url)
    start = time.monotonic()
    arrivals = [
        time.monotonic() - start async for event in provider.stream(ask()) if isinstance(event, TextChunk)
    ]
    assert len(arrivals) == 3
    assert arrivals[0] < 0.35, "the first chunk waited for later ones"
    assert arrivals[-1] - arrivals[0] > 0.6, "chunks were buffered and released together"


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
async def test_text_is_exact_when_every_byte_arrives_in_its_own_read(
    fake_openai: FakeOpenAI, newline: str
) -> None:
    reply = Reply(newline=newline).text(TEXT[:9], TEXT[9:]).finish().done()
    fake_openai.enqueue(reply.split_at(*range(len(reply.body()))))
    events = await collect(OpenAIProvider(base_url=fake_openai.base_url))
    assert text_of(events) == TEXT
    assert events[-1] == StepEnd("stop")


async def test_text_is_exact_when_split_in_two_at_every_byte_of_the_text(fake_openai: FakeOpenAI) -> None:
    reply = Reply().text(TEXT).finish().done()
    body = reply.body()
    start = body.index(TEXT.encode())
    cuts = range(start + 1, start + len(TEXT.encode()))
    fake_openai.enqueue(*(Reply().text(TEXT).finish().done().split_at(cut, pause=0.002) for cut in cuts))
    async with httpx.AsyncClient() as client:
        provider = OpenAIProvider(base_url=fake_openai.base_url, client=client)
        for cut in cuts:
            events = await collect(provider)
            assert text_of(events) == TEXT, f"split at byte {cut - start} of the text"
            assert all("\ufffd" not in e.text for e in events if isinstance(e, TextChunk))
    assert fake_openai.pending == 0


async def test_streamed_tool_calls_are_reassembled(fake_openai: FakeOpenAI) -> None:
    reply = (
        Reply()
        .text("Let me check.")
        .tool_call(0, id="call_a", name="weather", arguments="")
        .tool_call(0, arguments='{"city": "东')
        .tool_call(1, id="call_b", name="calculator", arguments='{"expr')
        .tool_call(0, arguments='京", "unit": "c"}')
        .tool_call(1, arguments='ession": "2+3*4"}')
        .finish("tool_calls")
        .usage(20, 9)
        .done()
    )
    # One byte per read: "东" and "京" are also cut inside their UTF-8 bytes on the wire.
    fake_openai.enqueue(reply.split_at(*range(len(reply.body()))))
    events = await collect(OpenAIProvider(base_url=fake_openai.base_url))
    assert events == [
        TextChunk("Let me check."),
        ToolCallRequest(id="call_a", name="weather", arguments={"city": "东京", "unit": "c"}),
        ToolCallRequest(id="call_b", name="calculator", arguments={"expression": "2+3*4"}),
        UsageReport(Usage(input_tokens=20, output_tokens=9)),
        StepEnd("tool_calls"),
    ]


async def test_whole_tool_calls_without_index_and_usage_beside_finish_reason(fake_openai: FakeOpenAI) -> None:
    # Some servers send each call whole, with no "index", and the usage in the finishing chunk.
    calls = [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "calculator", "arguments": '{"expression": "1"}'},
        },
        {"id": "call_2", "type": "function", "function": {"name": "current_time", "arguments": "{}"}},
    ]
    chunk = {
        "choices": [
            {"index": 0, "delta": {"role": "assistant", "tool_calls": calls}, "finish_reason": "tool_calls"}
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }
    fake_openai.enqueue(Reply().event(chunk).done())
    events = await collect(OpenAIProvider(base_url=fake_openai.base_url))
    assert events == [
        ToolCallRequest(id="call_1", name="calculator", arguments={"expression": "1"}),
        ToolCallRequest(id="call_2", name="current_time", arguments={}),
        UsageReport(Usage(input_tokens=5, output_tokens=2)),
        StepEnd("tool_calls"),
    ]


async def test_only_the_first_choice_is_read(fake_openai: FakeOpenAI) -> None:
    both = {"choices": [{"index": 1, "delta": {"content": "B"}}, {"index": 0, "delta": {"content": "A"}}]}
    fake_openai.enqueue(Reply().event(both).finish().done())
    assert text_of(await collect(OpenAIProvider(base_url=fake_openai.base_url))) == "A"


async def test_when_usage_comes_with_every_chunk_the_last_counts(fake_openai: FakeOpenAI) -> None:
    running = {
        "choices": [{"index": 0, "delta": {"content": "a"}}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 1},
    }
    fake_openai.enqueue(Reply().event(running).finish().usage(4, 2).done())
    events = await collect(OpenAIProvider(base_url=fake_openai.base_url))
    assert events == [TextChunk("a"), UsageReport(Usage(input_tokens=4, output_tokens=2)), StepEnd("stop")]


async def test_tool_call_without_arguments_gets_an_empty_object(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply().tool_call(0, id="call_t", name="current_time").finish("tool_calls").done())
    events = await collect(OpenAIProvider(base_url=fake_openai.base_url))
    assert events == [ToolCallRequest(id="call_t", name="current_time", arguments={}), StepEnd("tool_calls")]


@pytest.mark.parametrize(
    ("name", "arguments", "expected"),
    [
        (
            "calculator",
            '{"expression": "1+',
            r"invalid JSON arguments for tool 'calculator': \{\"expression\": \"1\+",
        ),
        ("calculator", '["1+1"]', r"arguments for tool 'calculator' that are not a JSON object"),
        (None, "{}", r"tool call without a function name"),
    ],
    ids=["invalid-json", "not-an-object", "no-name"],
)
async def test_a_broken_tool_call_is_an_upstream_error(
    fake_openai: FakeOpenAI, name: str | None, arguments: str, expected: str
) -> None:
    fake_openai.enqueue(
        Reply().tool_call(0, id="call_x", name=name, arguments=arguments).finish("tool_calls").done()
    )
    with pytest.raises(UpstreamError, match=expected):
        await collect(OpenAIProvider(base_url=fake_openai.base_url))


async def test_a_tool_call_without_id_gets_one(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply().tool_call(0, name="current_time", arguments="{}").finish("tool_calls").done())
    [call, _] = await collect(OpenAIProvider(base_url=fake_openai.base_url))
    assert isinstance(call, ToolCallRequest)
    assert call.name == "current_time"
    assert call.id.startswith("call_")


async def test_no_usage_report_when_the_server_sends_no_usage(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply.chat("hi", usage=None))
    events = await collect(OpenAIProvider(base_url=fake_openai.base_url))
    assert events == [TextChunk("hi"), StepEnd("stop")]


async def test_a_stream_that_ends_after_finish_reason_without_done_is_complete(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.enqueue(Reply().text("hi").finish("length"))
    events = await collect(OpenAIProvider(base_url=fake_openai.base_url))
    assert events == [TextChunk("hi"), StepEnd("length")]


async def test_request_body_and_headers(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply.chat("ok"))
    calc = ToolCallRequest(id="call_1", name="calculator", arguments={"expression": "2+3"})
    request = ModelRequest(
        model="glm-4-flash",
        messages=[
            Message(role="system", content="You are terse."),
            Message(role="user", content="你好, what is 2+3?", name="alice"),
            Message(role="assistant", content="", tool_calls=(calc,)),
            Message(role="tool", content="5", tool_call_id="call_1", name="calculator"),
        ],
        tools=[ToolSpec("calculator", "Arithmetic.", {"type": "object", "properties": {}})],
        temperature=0.7,
        max_tokens=256,
    )
    await collect(OpenAIProvider(base_url=fake_openai.base_url + "/", api_key="sk-test-123"), request)
    [sent] = fake_openai.requests
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert sent.headers["authorization"] == "Bearer sk-test-123"
    assert sent.headers["accept"] == "text/event-stream"
    assert sent.json == {
        "model": "glm-4-flash",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "你好, what is 2+3?", "name": "alice"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "calculator", "arguments": '{"expression": "2+3"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "5"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "calculator",
                    "description": "Arithmetic.",
                    "parameters": {"type": "object", "properties": {}},
                },
            }
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.7,
        "max_tokens": 256,
    }


async def test_no_api_key_sends_no_authorization_and_unset_options_are_left_out(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.enqueue(Reply.chat("ok"))
    await collect(OpenAIProvider(base_url=fake_openai.base_url, api_key=None))
    [sent] = fake_openai.requests
    assert "authorization" not in sent.headers
    assert set(sent.json) == {"model", "messages", "stream", "stream_options"}


async def test_extra_adds_and_removes_fields_but_never_turns_streaming_off(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply.chat("ok"))
    request = ask(extra={"top_p": 0.5, "stream_options": None, "stream": False})
    await collect(OpenAIProvider(base_url=fake_openai.base_url), request)
    body = fake_openai.requests[0].json
    assert body["top_p"] == 0.5
    assert body["stream"] is True
    assert "stream_options" not in body


async def test_fold_system_into_user_for_servers_that_drop_system_messages(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply.chat("ok"))
    messages = [
        Message(role="system", content="Answer in French."),
        Message(role="user", content="hello"),
        Message(role="assistant", content="bonjour"),
        Message(role="user", content="again"),
    ]
    provider = OpenAIProvider(base_url=fake_openai.base_url, fold_system_into_user=True)
    await collect(provider, ask(messages=messages))
    assert fake_openai.requests[0].json["messages"] == [
        {"role": "user", "content": "Answer in French.\n\nhello"},
        {"role": "assistant", "content": "bonjour"},
        {"role": "user", "content": "again"},
    ]


async def test_fold_system_without_a_user_message_sends_the_system_text_as_one(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.enqueue(Reply.chat("ok"))
    provider = OpenAIProvider(base_url=fake_openai.base_url, fold_system_into_user=True)
    await collect(provider, ask(messages=[Message(role="system", content="Greet the user.")]))
    assert fake_openai.requests[0].json["messages"] == [{"role": "user", "content": "Greet the user."}]


@pytest.mark.parametrize(
    ("reply", "expected", "code"),
    [
        pytest.param(
            Reply.error(401, "Incorrect API key provided: sk-secret-42. Find your key at platform."),
            r"HTTP 401: Incorrect API key provided: \[redacted\]",
            "upstream_auth",
            id="openai-error-body",
        ),
        pytest.param(
            Reply(429).raw('{"error": "model is overloaded"}'),
            r"HTTP 429: model is overloaded",
            "rate_limited",
            id="ollama",
        ),
        pytest.param(
            Reply(400).raw('{"object": "error", "message": "max_tokens is too large", "code": 400}'),
            r"HTTP 400: max_tokens is too large",
            "upstream_error",
            id="vllm",
        ),
        pytest.param(
            Reply(502, headers={"content-type": "text/html"}).raw("<html>\n<h1>Bad   Gateway</h1></html>"),
            r"HTTP 502: <html> <h1>Bad Gateway</h1></html>",
            "upstream_error",
            id="html",
        ),
        pytest.param(
            Reply(422).raw(
                '{"detail": [{"loc": ["body", "temperature"], "msg": "Input should be a number"}]}'
            ),
            r"HTTP 422: Input should be a number$",
            "upstream_error",
            id="fastapi",
        ),
        pytest.param(Reply(503), r"HTTP 503: Service Unavailable", "upstream_error", id="empty-body"),
        pytest.param(
            Reply(500).raw('{"unexpected": true}'),
            r'HTTP 500: \{"unexpected": true\}',
            "upstream_error",
            id="unknown-json",
        ),
        pytest.param(
            Reply(200, headers={"content-type": "application/json"}).raw('{"error": {"message": "quota"}}'),
            r"JSON instead of an event stream: quota",
            "upstream_error",
            id="json-200",
        ),
    ],
)
async def test_http_errors_carry_the_status_and_the_upstream_message(
    fake_openai: FakeOpenAI, reply: Reply, expected: str, code: str
) -> None:
    fake_openai.enqueue(reply)
    provider = OpenAIProvider(base_url=fake_openai.base_url, api_key="sk-secret-42")
    with pytest.raises(UpstreamError, match=expected) as caught:
        await collect(provider)
    assert caught.value.code == code
    assert "sk-secret-42" not in caught.value.message


async def test_an_error_body_is_cut_to_a_short_excerpt(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply.error(500, "x" * 100_000))
    with pytest.raises(UpstreamError) as caught:
        await collect(OpenAIProvider(base_url=fake_openai.base_url))
    assert len(caught.value.message) < 300


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        pytest.param(
            Reply().text("ok").raw("data: {not json\n\n"), r"malformed stream chunk: \{not json", id="json"
        ),
        pytest.param(
            Reply().text("ok").raw("data: [1, 2]\n\n"), r"malformed stream chunk: \[1, 2\]", id="not-object"
        ),
        pytest.param(
            Reply().text("ok").event({"choices": [{"index": 0, "delta": "oops"}]}),
            r"malformed stream chunk: .*oops",
            id="bad-shape",
        ),
        pytest.param(
            Reply().text("ok").event({"error": {"message": "content filter triggered", "code": "1301"}}),
            r"error mid-stream: content filter triggered",
            id="error-object",
        ),
        pytest.param(
            Reply().text("ok").raw('event: error\ndata: {"message": "overloaded"}\n\n'),
            r"error mid-stream: overloaded",
            id="error-event",
        ),
        pytest.param(
            Reply().text("ok").raw(b'data: {"choices": [{"index": 0, "delta": {"content": "\xff"}}]}\n\n'),
            r"not valid UTF-8",
            id="bad-utf8",
        ),
        pytest.param(
            Reply().text("ok").drop(), r"closed the connection before the reply was complete", id="dropped"
        ),
        pytest.param(Reply().text("ok"), r"closed the connection before the reply was complete", id="no-end"),
    ],
)
async def test_a_broken_stream_fails_after_the_text_that_did_arrive(
    fake_openai: FakeOpenAI, reply: Reply, expected: str
) -> None:
    fake_openai.enqueue(reply)
    received: list[ProviderEvent] = []
    with pytest.raises(UpstreamError, match=expected) as caught:
        await collect_into(received, OpenAIProvider(base_url=fake_openai.base_url))
    assert received == [TextChunk("ok")]
    assert type(caught.value) is UpstreamError


async def test_a_dropped_connection_keeps_the_transport_error_as_cause(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply().text("ok").drop())
    with pytest.raises(UpstreamError) as caught:
        await collect(OpenAIProvider(base_url=fake_openai.base_url))
    assert isinstance(caught.value.__cause__, httpx.RemoteProtocolError)


async def test_a_stalled_stream_times_out(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply().text("ok").stall())
    provider = OpenAIProvider(base_url=fake_openai.base_url, read_timeout=0.3)
    received: list[ProviderEvent] = []
    start = time.monotonic()
    with pytest.raises(UpstreamTimeout, match="stopped sending") as caught:
        await collect_into(received, provider)
    assert time.monotonic() - start < 3
    assert received == [TextChunk("ok")]
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    assert caught.value.code == "upstream_timeout"


@pytest.mark.parametrize(
    ("error", "kind", "expected"),
    [
        (httpx.ConnectTimeout, UpstreamTimeout, r"^timed out connecting to the model API \(openai\)$"),
        (httpx.PoolTimeout, UpstreamTimeout, r"^the model API request \(openai\) timed out$"),
        (httpx.ReadError, UpstreamError, r"^the model API request \(openai\) failed: ReadError$"),
    ],
)
async def test_transport_errors(
    error: type[httpx.TransportError], kind: type[UpstreamError], expected: str
) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error("boom", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(fail)) as client:
        provider = OpenAIProvider(base_url="http://model.invalid/v1", client=client)
        with pytest.raises(UpstreamError, match=expected) as caught:
            await collect(provider)
    assert type(caught.value) is kind
    assert isinstance(caught.value.__cause__, error)


async def test_nobody_listening_is_an_upstream_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(UpstreamError, match="could not connect") as caught:
        await collect(OpenAIProvider(base_url=f"http://127.0.0.1:{port}/v1", connect_timeout=2))
    assert type(caught.value) is UpstreamError
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


@pytest.mark.parametrize("shared_client", [False, True], ids=["own-client", "shared-client"])
async def test_aclose_closes_the_upstream_request_within_a_second(
    fake_openai: FakeOpenAI, shared_client: bool
) -> None:
    fake_openai.enqueue(Reply().text("ok").stall())
    async with httpx.AsyncClient() as client:
        provider = OpenAIProvider(base_url=fake_openai.base_url, client=client if shared_client else None)
        events = provider.stream(ask())
        assert await anext(events) == TextChunk("ok")
        closing = time.monotonic()
        await events.aclose()
        closed = await fake_openai.wait_client_closed(0, within=1.0)
        assert closed - closing < 1.0
        assert not client.is_closed


async def test_cancelling_the_consumer_closes_the_upstream_request_within_a_second(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.enqueue(Reply().text("ok").stall())
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in OpenAIProvider(base_url=fake_openai.base_url).stream(ask()):
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 5)
    cancelling = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    closed = await fake_openai.wait_client_closed(0, within=1.0)
    assert closed - cancelling < 1.0


async def test_a_shared_client_serves_several_calls_and_stays_open(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply.chat("one"), Reply.chat("two"))
    async with httpx.AsyncClient() as client:
        provider = OpenAIProvider(base_url=fake_openai.base_url, client=client)
        assert text_of(await collect(provider)) == "one"
        assert text_of(await collect(provider)) == "two"
        assert not client.is_closed


async def text_on_a_loop_of_its_own(base_url: str) -> tuple[str, httpx.AsyncClient]:
    client = shared_client()
    try:
        return text_of(await collect(OpenAIProvider(base_url=base_url))), client
    finally:
        await client.aclose()


async def test_calls_on_one_loop_share_one_client_and_its_kept_alive_connection() -> None:
    with FakeOpenAI(keep_alive=True) as upstream:
        upstream.enqueue(*(Reply.chat(text) for text in ("one", "two", "three", "four")))
        client = shared_client()
        try:
            # Two providers, as two runs would make them: one client, one connection.
            assert text_of(await collect(OpenAIProvider(base_url=upstream.base_url))) == "one"
            assert text_of(await collect(OpenAIProvider(base_url=upstream.base_url))) == "two"
            # Another loop (the Lambda buffered path runs one per thread) gets a client of its own...
            text, other = await asyncio.to_thread(asyncio.run, text_on_a_loop_of_its_own(upstream.base_url))
            assert text == "three"
            assert other is not client
            # ...and this loop's client still has its connection.
            assert text_of(await collect(OpenAIProvider(base_url=upstream.base_url))) == "four"
            assert shared_client() is client
        finally:
            await client.aclose()
        assert [request.connection for request in upstream.requests] == [1, 1, 2, 1]
        assert upstream.connections == 2
    replacement = shared_client()  # a closed client is not handed out again
    assert replacement is not client
    assert not replacement.is_closed


async def test_a_body_left_open_after_done_does_not_hold_up_the_step(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply.chat("ok").stall())
    provider = OpenAIProvider(base_url=fake_openai.base_url, read_timeout=10)
    start = time.monotonic()
    events = await collect(provider)
    assert events[-1] == StepEnd("stop")
    assert time.monotonic() - start < 5, "the step waited for the end of the body after [DONE]"
    await fake_openai.wait_client_closed(0, within=1.0)  # and that connection is not kept


async def test_the_fake_answers_an_unscripted_request_with_a_clear_error(fake_openai: FakeOpenAI) -> None:
    with pytest.raises(
        UpstreamError, match="HTTP 500: fake_openai: no scripted reply left for POST /v1/chat/completions"
    ):
        await collect(OpenAIProvider(base_url=fake_openai.base_url))


def _escaped_delta(escaped_text: str) -> str:
    """A chunk whose content is written with JSON \\u escapes exactly as given (ASCII on the wire)."""
    return 'data: {"choices":[{"index":0,"delta":{"content":"' + escaped_text + '"}}]}\n\n'


async def test_a_surrogate_pair_split_across_chunks_becomes_one_character(fake_openai: FakeOpenAI) -> None:
    reply = Reply()
    for piece in ["smile ", "\\ud83d", "\\ude00", " and ", "\\ud83c\\udde8", "\\ud83c\\uddf3", "!"]:
        reply.raw(_escaped_delta(piece))
    fake_openai.enqueue(reply.finish("stop").done())
    events = await collect(OpenAIProvider(base_url=fake_openai.base_url))
    assert text_of(events) == "smile 😀 and 🇨🇳!"
    for event in events:
        if isinstance(event, TextChunk):
            event.text.encode("utf-8")  # every chunk is sendable text on its own


async def test_a_surrogate_without_partner_becomes_a_replacement_character(fake_openai: FakeOpenAI) -> None:
    reply = Reply().raw(_escaped_delta("a\\ude00b")).raw(_escaped_delta("c\\ud83d"))
    fake_openai.enqueue(reply.finish("stop").done())
    events = await collect(OpenAIProvider(base_url=fake_openai.base_url))
    assert text_of(events) == "a\ufffdbc\ufffd"
