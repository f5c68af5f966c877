"""The anthropic provider against a real local HTTP server that plays the Messages API's event stream."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from agentstream.core.events import Usage
from agentstream.core.providers._retry import Retrying, RetryPolicy
from agentstream.core.providers.anthropic import AnthropicProvider
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
from agentstream.errors import UpstreamError, UpstreamTimeout
from tests.fakes.anthropic_upstream import AnthropicReply
from tests.fakes.openai_upstream import FakeOpenAI

pytestmark = pytest.mark.anyio

TEXT = "你好，世界！👨‍👩‍👧‍👦 🇯🇵🇫🇷 café (cafe\u0301) नमस्ते ✓"
QUESTION = [Message(role="system", content="Be brief."), Message(role="user", content="hi")]
KEY = "sk-ant-secret-42"
CALCULATOR = ToolSpec("calculator", "Evaluate arithmetic", {"type": "object", "properties": {}})


def ask(**fields: Any) -> ModelRequest:
    return ModelRequest(model="claude-test", messages=fields.pop("messages", QUESTION), **fields)


def provider(fake: FakeOpenAI, **kwargs: Any) -> AnthropicProvider:
    return AnthropicProvider(base_url=fake.url, api_key=KEY, **kwargs)


async def collect(p: AnthropicProvider, request: ModelRequest | None = None) -> list[ProviderEvent]:
    return [event async for event in p.stream(request or ask())]


async def collect_into(received: list[ProviderEvent], p: AnthropicProvider) -> None:
    async for event in p.stream(ask()):
        received.append(event)


def text_of(events: list[ProviderEvent]) -> str:
    return "".join(event.text for event in events if isinstance(event, TextChunk))


async def test_a_reply_streams_text_then_usage_then_step_end(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(AnthropicReply.message("Hello", ", world", usage=(12, 3), ping=True))
    events = await collect(provider(fake_openai))
    assert events == [
        TextChunk("Hello"),
        TextChunk(", world"),
        UsageReport(Usage(input_tokens=12, output_tokens=3)),
        StepEnd("stop"),
    ]


async def test_the_request_is_the_messages_api_with_the_key_in_its_header(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(AnthropicReply.message("ok"))
    await collect(provider(fake_openai), ask(tools=[CALCULATOR], temperature=0.2))
    sent = fake_openai.requests[0]
    assert (sent.method, sent.path) == ("POST", "/v1/messages")
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent.headers
    assert sent.json == {
        "model": "claude-test",
        "max_tokens": 4096,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "temperature": 0.2,
        "stream": True,
        "tools": [
            {
                "name": "calculator",
                "description": "Evaluate arithmetic",
                "input_schema": CALCULATOR.parameters,
            }
        ],
    }


async def test_a_base_url_with_v1_works_too(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(AnthropicReply.message("ok"))
    await collect(AnthropicProvider(base_url=fake_openai.url + "/v1/"))
    assert fake_openai.requests[0].path == "/v1/messages"
    assert "x-api-key" not in fake_openai.requests[0].headers


async def test_text_is_yielded_as_it_arrives_not_at_the_end(fake_openai: FakeOpenAI) -> None:
    reply = AnthropicReply.message("one ", "two ", "three", pause=0.3)
    fake_openai.enqueue(reply)
    p = provider(fake_openai)
    arrivals = [(e.text, time.monotonic()) async for e in p.stream(ask()) if isinstance(e, TextChunk)]
    writes = [w for w in reply.writes if isinstance(w, bytes) and w]
    sent_at = fake_openai.requests[0].sent_at
    for text, arrived in arrivals:
        written = sent_at[next(i for i, w in enumerate(writes) if text.encode() in w)]
        assert arrived - written < 0.25, f"{text!r} waited for later writes"
    assert arrivals[-1][1] - arrivals[0][1] > 0.45, "deltas were buffered and released together"


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
async def test_text_is_exact_when_every_byte_arrives_in_its_own_read(
    fake_openai: FakeOpenAI, newline: str
) -> None:
    reply = AnthropicReply(newline=newline).start().text(TEXT[:9], TEXT[9:]).stop()
    fake_openai.enqueue(reply.split_at(*range(len(reply.body()))))
    events = await collect(provider(fake_openai))
    assert text_of(events) == TEXT
    assert all("\ufffd" not in e.text for e in events if isinstance(e, TextChunk))
    assert events[-1] == StepEnd("stop")


async def test_a_character_escaped_as_a_surrogate_pair_split_across_deltas_stays_whole(
    fake_openai: FakeOpenAI,
) -> None:
    reply = AnthropicReply().start()
    reply.event({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    for piece in ("smile \\ud83d", "\\ude00 done"):
        reply.raw(
            'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
            f'"delta":{{"type":"text_delta","text":"{piece}"}}}}\n\n'
        )
    fake_openai.enqueue(reply.stop())
    assert text_of(await collect(provider(fake_openai))) == "smile 😀 done"


async def test_tool_use_input_fragments_are_joined_into_the_call(fake_openai: FakeOpenAI) -> None:
    reply = (
        AnthropicReply()
        .start(input_tokens=30)
        .text("Let me compute.")
        .tool_use("toolu_a", "calculator", '{"expres', 'sion": "2+3', '*4", "note": "东', '京"}')
        .tool_use("toolu_b", "current_time")
        .stop("tool_use", output_tokens=21)
    )
    fake_openai.enqueue(reply.split_at(*range(0, len(reply.body()), 7)))
    events = await collect(provider(fake_openai), ask(tools=[CALCULATOR]))
    assert events == [
        TextChunk("Let me compute."),
        ToolCallRequest("toolu_a", "calculator", {"expression": "2+3*4", "note": "东京"}),
        ToolCallRequest("toolu_b", "current_time", {}),
        UsageReport(Usage(input_tokens=30, output_tokens=21)),
        StepEnd("tool_calls"),
    ]


async def test_the_next_step_sends_the_calls_and_their_results_back(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(AnthropicReply.message("14"))
    call = ToolCallRequest("toolu_a", "calculator", {"expression": "2+3*4"})
    other = ToolCallRequest("toolu_b", "current_time", {})
    messages = [
        Message("system", "Be brief."),
        Message("assistant", "an older answer whose question fell out of the history window"),
        Message("user", "what is 2+3*4, and the time?"),
        Message("assistant", "Let me compute.", tool_calls=(call, other)),
        Message("tool", "14", tool_call_id="toolu_a", name="calculator"),
        Message("tool", "", tool_call_id="toolu_b", name="current_time"),
    ]
    await collect(provider(fake_openai), ask(messages=messages, tools=[CALCULATOR]))
    assert fake_openai.requests[0].json["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "what is 2+3*4, and the time?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me compute."},
                {"type": "tool_use", "id": "toolu_a", "name": "calculator", "input": {"expression": "2+3*4"}},
                {"type": "tool_use", "id": "toolu_b", "name": "current_time", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_a", "content": "14"},
                {"type": "tool_result", "tool_use_id": "toolu_b"},
            ],
        },
    ]


async def test_thinking_is_not_text_and_cached_input_counts_as_input(fake_openai: FakeOpenAI) -> None:
    reply = (
        AnthropicReply()
        .start(input_tokens=5, cache_read=100)
        .thinking("hmm")
        .text("ok")
        .stop(output_tokens=9)
    )
    fake_openai.enqueue(reply)
    assert await collect(provider(fake_openai)) == [
        TextChunk("ok"),
        UsageReport(Usage(input_tokens=105, output_tokens=9)),
        StepEnd("stop"),
    ]


async def test_max_tokens_and_options_reach_the_request(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(AnthropicReply().start().text("trunc").stop("max_tokens"))
    events = await collect(provider(fake_openai), ask(max_tokens=5, extra={"top_k": 3, "temperature": None}))
    assert events[-1] == StepEnd("length")
    sent = fake_openai.requests[0].json
    assert (sent["max_tokens"], sent["top_k"], "temperature" in sent) == (5, 3, False)


@pytest.mark.parametrize(
    ("reply", "code", "retryable", "retry_after"),
    [
        pytest.param(
            AnthropicReply.api_error(401, "authentication_error", f"invalid x-api-key {KEY}"),
            "upstream_auth",
            False,
            None,
            id="401",
        ),
        pytest.param(
            AnthropicReply.api_error(
                429, "rate_limit_error", "Number of request tokens exceeded", retry_after=7
            ),
            "rate_limited",
            True,
            7.0,
            id="429",
        ),
        pytest.param(
            AnthropicReply.api_error(
                400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"
            ),
            "context_length_exceeded",
            False,
            None,
            id="too-long",
        ),
        pytest.param(
            AnthropicReply.api_error(404, "not_found_error", "model: claude-nope"),
            "model_not_found",
            False,
            None,
            id="no-model",
        ),
        pytest.param(
            AnthropicReply.api_error(529, "overloaded_error", "Overloaded"),
            "upstream_error",
            True,
            None,
            id="529",
        ),
        pytest.param(
            AnthropicReply.api_error(500, "api_error", "Internal server error"),
            "upstream_error",
            True,
            None,
            id="500",
        ),
    ],
)
async def test_http_errors_become_the_contract_codes(
    fake_openai: FakeOpenAI, reply: AnthropicReply, code: str, retryable: bool, retry_after: float | None
) -> None:
    fake_openai.enqueue(reply)
    with pytest.raises(UpstreamError) as caught:
        await collect(provider(fake_openai))
    error = caught.value
    assert (error.code, error.retryable, error.retry_after) == (code, retryable, retry_after)
    assert f"HTTP {reply.status}" in error.message
    assert KEY not in error.message


@pytest.mark.parametrize(
    ("error_type", "code", "retryable"),
    [
        ("overloaded_error", "upstream_error", True),
        ("rate_limit_error", "rate_limited", True),
        ("api_error", "upstream_error", True),
        ("invalid_request_error", "upstream_error", False),
    ],
)
async def test_an_error_event_mid_stream_fails_after_the_text_that_did_arrive(
    fake_openai: FakeOpenAI, error_type: str, code: str, retryable: bool
) -> None:
    reply = AnthropicReply().start()
    reply.index += 1
    reply.event({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    reply.event(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "partial"}}
    )
    fake_openai.enqueue(reply.ping().stream_error(error_type, f"{error_type} says {KEY}"))
    received: list[ProviderEvent] = []
    with pytest.raises(UpstreamError, match="error mid-stream") as caught:
        await collect_into(received, provider(fake_openai))
    assert received == [TextChunk("partial")]
    assert (caught.value.code, caught.value.retryable) == (code, retryable)
    assert KEY not in caught.value.message


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        pytest.param(
            AnthropicReply().start().text("ok").drop(), "closed the connection before", id="dropped"
        ),
        pytest.param(
            AnthropicReply().start().text("ok"), "closed the connection before", id="no-message-stop"
        ),
        pytest.param(
            AnthropicReply().start().text("ok").raw("event: x\ndata: {nope\n\n"), "malformed", id="json"
        ),
        pytest.param(
            AnthropicReply()
            .start()
            .text("ok")
            .event({"type": "content_block_delta", "index": 7, "delta": {"type": "input_json_delta"}}),
            "malformed",
            id="delta-for-no-block",
        ),
    ],
)
async def test_a_broken_stream_fails_after_the_text_that_did_arrive(
    fake_openai: FakeOpenAI, reply: AnthropicReply, expected: str
) -> None:
    fake_openai.enqueue(reply)
    received: list[ProviderEvent] = []
    with pytest.raises(UpstreamError, match=expected):
        await collect_into(received, provider(fake_openai))
    assert received == [TextChunk("ok")]


async def test_a_stalled_stream_times_out(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(AnthropicReply().start().text("ok").stall())
    received: list[ProviderEvent] = []
    with pytest.raises(UpstreamTimeout, match="stopped sending"):
        await collect_into(received, provider(fake_openai, read_timeout=0.3))
    assert received == [TextChunk("ok")]


async def test_aclose_closes_the_upstream_request_within_a_second(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(AnthropicReply().start().text("ok").stall())
    events = provider(fake_openai).stream(ask())
    assert await anext(events) == TextChunk("ok")
    closing = time.monotonic()
    await events.aclose()
    assert await fake_openai.wait_client_closed(0, within=1.0) - closing < 1.0


async def test_cancelling_the_consumer_closes_the_upstream_request_within_a_second(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.enqueue(AnthropicReply().start().text("ok").stall())
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in provider(fake_openai).stream(ask()):
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 5)
    cancelling = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await fake_openai.wait_client_closed(0, within=1.0) - cancelling < 1.0


async def test_a_retried_failure_is_logged_without_the_key(
    fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    fake_openai.enqueue(
        AnthropicReply.api_error(500, "api_error", f"upstream broke near {KEY}"), AnthropicReply.message("ok")
    )
    retrying = Retrying(provider(fake_openai), RetryPolicy(attempts=2, base_delay=0.01))
    with caplog.at_level("WARNING"):
        events = [event async for event in retrying.stream(ask())]
    assert text_of(events) == "ok"
    assert "attempt 2 of 2" in caplog.text
    assert "[redacted]" in caplog.text
    assert KEY not in caplog.text
