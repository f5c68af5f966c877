"""The bedrock provider: boto3's own client and parser against a local server playing ConverseStream
frames (application/vnd.amazon.eventstream), and the thread-to-event-loop hand-off on its own."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer
from botocore.exceptions import EndpointConnectionError, NoCredentialsError, ReadTimeoutError

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
from agentstream.core.providers.bedrock import BedrockProvider, _Call, _client, _error
from agentstream.errors import UpstreamError
from tests.fakes.bedrock_upstream import BedrockReply, encode_frame
from tests.fakes.openai_upstream import FakeOpenAI

pytestmark = pytest.mark.anyio

TEXT = "你好，世界！👨‍👩‍👧‍👦 🇯🇵🇫🇷 café (cafe\u0301) नमस्ते ✓"
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
QUESTION = [Message(role="system", content="Be brief."), Message(role="user", content="hi")]
CALCULATOR = ToolSpec("calculator", "Evaluate arithmetic", {"type": "object", "properties": {}})


def ask(**fields: Any) -> ModelRequest:
    return ModelRequest(model=MODEL, messages=fields.pop("messages", QUESTION), **fields)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def fake_openai(upstream: FakeOpenAI) -> FakeOpenAI:
    """One server for the module, so boto3 makes its client once (one per test would cost ~0.1 s each)."""
    assert upstream.pending == 0, "an earlier test left scripted replies behind"
    upstream.requests.clear()
    return upstream


def provider(fake: FakeOpenAI, read_timeout: float = 10.0) -> BedrockProvider:
    return BedrockProvider(_client("us-east-1", fake.url, 2.0, read_timeout))


async def collect(p: BedrockProvider, request: ModelRequest | None = None) -> list[ProviderEvent]:
    return [event async for event in p.stream(request or ask())]


async def collect_into(received: list[ProviderEvent], p: BedrockProvider) -> None:
    async for event in p.stream(ask()):
        received.append(event)


def text_of(events: list[ProviderEvent]) -> str:
    return "".join(event.text for event in events if isinstance(event, TextChunk))


def test_the_test_frames_are_what_botocore_parses() -> None:
    reply = BedrockReply().start().text("你好").exception("throttlingException", "slow down")
    buffer = EventStreamBuffer()
    buffer.add_data(reply.body())
    messages = list(buffer)
    assert [m.headers[":message-type"] for m in messages] == ["event", "event", "event", "exception"]
    assert [m.headers.get(":event-type") for m in messages[:3]] == [
        "messageStart",
        "contentBlockDelta",
        "contentBlockStop",
    ]
    assert json.loads(messages[1].payload)["delta"] == {"text": "你好"}
    assert messages[3].headers[":exception-type"] == "throttlingException"
    corrupted = bytearray(encode_frame({":event-type": "x"}, b"{}"))
    corrupted[-5] ^= 1  # one bit of the payload: the message CRC no longer matches
    buffer = EventStreamBuffer()
    buffer.add_data(bytes(corrupted))
    with pytest.raises(ChecksumMismatch):
        next(buffer)


async def test_a_reply_streams_text_then_usage_then_step_end(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(BedrockReply.message("Hello", ", world", usage=(12, 3)))
    assert await collect(provider(fake_openai)) == [
        TextChunk("Hello"),
        TextChunk(", world"),
        UsageReport(Usage(input_tokens=12, output_tokens=3)),
        StepEnd("stop"),
    ]


async def test_the_request_is_converse_stream_signed_by_boto3(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(BedrockReply.message("ok"))
    request = ask(
        tools=[CALCULATOR], temperature=0.2, max_tokens=300, extra={"inferenceConfig": {"topP": 0.9}}
    )
    await collect(provider(fake_openai), request)
    sent = fake_openai.requests[0]
    assert (sent.method, sent.path) == ("POST", f"/model/{MODEL.replace(':', '%3A')}/converse-stream")
    assert sent.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/")
    assert sent.json == {
        "messages": [{"role": "user", "content": [{"text": "hi"}]}],
        "system": [{"text": "Be brief."}],
        "inferenceConfig": {"maxTokens": 300, "temperature": 0.2, "topP": 0.9},
        "toolConfig": {
            "tools": [
                {
                    "toolSpec": {
                        "name": "calculator",
                        "inputSchema": {"json": CALCULATOR.parameters},
                        "description": "Evaluate arithmetic",
                    }
                }
            ]
        },
    }


async def test_text_is_yielded_as_it_arrives_not_at_the_end(fake_openai: FakeOpenAI) -> None:
    reply = BedrockReply.message("one ", "two ", "three", pause=0.3)
    fake_openai.enqueue(reply)
    p = provider(fake_openai)
    arrivals = [(e.text, time.monotonic()) async for e in p.stream(ask()) if isinstance(e, TextChunk)]
    writes = [w for w in reply.writes if isinstance(w, bytes) and w]
    sent_at = fake_openai.requests[0].sent_at
    for text, arrived in arrivals:
        written = sent_at[next(i for i, w in enumerate(writes) if text.encode() in w)]
        assert arrived - written < 0.25, f"{text!r} waited for later writes"
    assert arrivals[-1][1] - arrivals[0][1] > 0.45, "deltas were buffered and released together"


async def test_text_is_exact_when_frames_are_cut_into_small_tcp_writes(fake_openai: FakeOpenAI) -> None:
    reply = BedrockReply().start().text(*TEXT).stop().metadata(3, 9)
    # 5-byte writes: frames, their headers and the multi-byte characters in them are all cut apart
    fake_openai.enqueue(reply.split_at(*range(5, len(reply.body()), 5)))
    events = await collect(provider(fake_openai))
    assert text_of(events) == TEXT
    assert [e.text for e in events if isinstance(e, TextChunk)] == list(TEXT)
    assert events[-2:] == [UsageReport(Usage(3, 9)), StepEnd("stop")]


async def test_a_character_escaped_as_a_surrogate_pair_split_across_frames_stays_whole(
    fake_openai: FakeOpenAI,
) -> None:
    # "😀" is \ud83d\ude00 in ASCII-only JSON; each half in a frame of its own
    reply = BedrockReply().start().text("smile \ud83d", "\ude00 done", ensure_ascii=True).stop().metadata()
    fake_openai.enqueue(reply)
    assert text_of(await collect(provider(fake_openai))) == "smile 😀 done"


async def test_tool_use_input_fragments_are_joined_into_the_call(fake_openai: FakeOpenAI) -> None:
    reply = (
        BedrockReply()
        .start()
        .text("Let me compute.")
        .tool_use("tooluse_a", "calculator", '{"expres', 'sion": "2+3', '*4", "note": "东', '京"}')
        .tool_use("tooluse_b", "current_time")
        .stop("tool_use")
        .metadata(30, 21)
    )
    fake_openai.enqueue(reply)
    assert await collect(provider(fake_openai), ask(tools=[CALCULATOR])) == [
        TextChunk("Let me compute."),
        ToolCallRequest("tooluse_a", "calculator", {"expression": "2+3*4", "note": "东京"}),
        ToolCallRequest("tooluse_b", "current_time", {}),
        UsageReport(Usage(input_tokens=30, output_tokens=21)),
        StepEnd("tool_calls"),
    ]


async def test_the_next_step_sends_tool_use_and_tool_result_blocks(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(BedrockReply.message("14"))
    call = ToolCallRequest("tooluse_a", "calculator", {"expression": "2+3*4"})
    messages = [
        Message("system", "Be brief."),
        Message("assistant", "an answer whose question fell out of the history window"),
        Message("user", "2+3*4?"),
        Message("assistant", "", tool_calls=(call,)),
        Message("tool", "14", tool_call_id="tooluse_a", name="calculator"),
    ]
    await collect(provider(fake_openai), ask(messages=messages, tools=[CALCULATOR]))
    assert fake_openai.requests[0].json["messages"] == [
        {"role": "user", "content": [{"text": "2+3*4?"}]},
        {
            "role": "assistant",
            "content": [
                {
                    "toolUse": {
                        "toolUseId": "tooluse_a",
                        "name": "calculator",
                        "input": {"expression": "2+3*4"},
                    }
                }
            ],
        },
        {
            "role": "user",
            "content": [{"toolResult": {"toolUseId": "tooluse_a", "content": [{"text": "14"}]}}],
        },
    ]


@pytest.mark.parametrize(
    ("reply", "code", "retryable"),
    [
        pytest.param(
            BedrockReply.api_error(429, "ThrottlingException", "Too many requests"), "rate_limited", True
        ),
        pytest.param(
            BedrockReply.api_error(
                403,
                "AccessDeniedException",
                "User: arn:aws:sts::123456789012:assumed-role/fn/x is not authorized to perform: "
                "bedrock:InvokeModelWithResponseStream",
            ),
            "upstream_auth",
            False,
        ),
        pytest.param(
            BedrockReply.api_error(400, "ValidationException", "The provided model identifier is invalid."),
            "model_not_found",
            False,
        ),
        pytest.param(
            BedrockReply.api_error(404, "ResourceNotFoundException", "Model not found"),
            "model_not_found",
            False,
        ),
        pytest.param(
            BedrockReply.api_error(400, "ValidationException", "Input is too long for requested model."),
            "context_length_exceeded",
            False,
        ),
        pytest.param(
            BedrockReply.api_error(400, "ValidationException", "temperature must be <= 1"),
            "upstream_error",
            False,
        ),
        pytest.param(
            BedrockReply.api_error(408, "ModelTimeoutException", "too slow"), "upstream_timeout", True
        ),
        pytest.param(
            BedrockReply.api_error(503, "ServiceUnavailableException", "try later"), "upstream_error", True
        ),
        pytest.param(BedrockReply.api_error(500, "InternalServerException", "oops"), "upstream_error", True),
    ],
)
async def test_http_errors_become_the_contract_codes(
    fake_openai: FakeOpenAI, reply: BedrockReply, code: str, retryable: bool
) -> None:
    fake_openai.enqueue(reply)
    with pytest.raises(UpstreamError) as caught:
        await collect(provider(fake_openai))
    assert (caught.value.code, caught.value.retryable) == (code, retryable)
    assert "Amazon Bedrock answered" in caught.value.message
    assert "123456789012" not in caught.value.message
    assert len(fake_openai.requests) == 1  # botocore's own retries are off


@pytest.mark.parametrize(
    ("exception", "code", "retryable"),
    [
        ("throttlingException", "rate_limited", True),
        ("modelStreamErrorException", "upstream_error", True),
        ("internalServerException", "upstream_error", True),
        ("serviceUnavailableException", "upstream_error", True),
        ("validationException", "upstream_error", False),
    ],
)
async def test_an_exception_in_the_stream_fails_after_the_text_that_did_arrive(
    fake_openai: FakeOpenAI, exception: str, code: str, retryable: bool
) -> None:
    fake_openai.enqueue(BedrockReply().start().text("partial").exception(exception, "it broke"))
    received: list[ProviderEvent] = []
    with pytest.raises(UpstreamError, match=f"answered {exception}: it broke") as caught:
        await collect_into(received, provider(fake_openai))
    assert received == [TextChunk("partial")]
    assert (caught.value.code, caught.value.retryable) == (code, retryable)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        pytest.param(
            BedrockReply().start().text("partial").drop(), "connection to Amazon Bedrock failed", id="dropped"
        ),
        pytest.param(
            BedrockReply().start().text("partial"), "closed the stream before", id="no-message-stop"
        ),
        pytest.param(
            BedrockReply().start().text("partial").raw(b"\x00\x00\x00\x20garbage!").stall(),
            "could not be read",
            id="bad-frame",
        ),
    ],
)
async def test_a_broken_stream_fails_after_the_text_that_did_arrive(
    fake_openai: FakeOpenAI, reply: BedrockReply, expected: str
) -> None:
    fake_openai.enqueue(reply)
    received: list[ProviderEvent] = []
    with pytest.raises(UpstreamError, match=expected):
        await collect_into(received, provider(fake_openai))
    assert received == [TextChunk("partial")]


async def test_a_stalled_stream_times_out(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(BedrockReply().start().text("partial").stall())
    received: list[ProviderEvent] = []
    with pytest.raises(UpstreamError) as caught:
        await collect_into(received, provider(fake_openai, read_timeout=0.3))
    assert caught.value.code == "upstream_timeout"
    assert received == [TextChunk("partial")]


async def test_aclose_closes_the_upstream_connection_within_a_second(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(BedrockReply().start().text("partial").stall())
    events = provider(fake_openai).stream(ask())
    assert await anext(events) == TextChunk("partial")
    closing = time.monotonic()
    await events.aclose()
    assert await fake_openai.wait_client_closed(0, within=1.0) - closing < 1.0


async def test_cancelling_the_consumer_closes_the_upstream_connection_within_a_second(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.enqueue(BedrockReply().start().text("partial").stall())
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


async def test_a_complete_reply_leaves_its_connection_to_the_next_call(fake_openai: FakeOpenAI) -> None:
    with FakeOpenAI(keep_alive=True) as fake:
        fake.enqueue(BedrockReply.message("one"), BedrockReply.message("two"))
        p = provider(fake)
        assert text_of(await collect(p)) == "one"
        assert text_of(await collect(p)) == "two"
        assert [r.connection for r in fake.requests] == [1, 1]


# --- the hand-off between the reader thread and the event loop, with a stand-in for boto3 ---


class _Stream:
    """Stands in for boto3's EventStream: counts the events read from it, blocks like a socket read."""

    def __init__(self, events: Iterator[dict[str, Any]], delay: float = 0.0) -> None:
        self.events = events
        self.delay = delay
        self.read = 0
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for event in self.events:
            if self.delay:
                time.sleep(self.delay)  # a blocking read, as boto3's is
            self.read += 1
            yield event

    def close(self) -> None:
        self.closed.set()


class _Client:
    def __init__(self, stream: _Stream) -> None:
        self.stream = stream

    def converse_stream(self, **params: Any) -> dict[str, Any]:
        return {"stream": self.stream}


def _deltas() -> Iterator[dict[str, Any]]:
    return (
        {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": "x"}}} for _ in itertools.count()
    )


async def test_a_slow_reader_holds_the_thread_back_at_the_hand_off_limit() -> None:
    stream = _Stream(_deltas())
    call = _Call(asyncio.get_running_loop(), limit=8)
    thread = threading.Thread(target=call.run, args=(_Client(stream), {}), daemon=True)
    thread.start()
    assert await call.get()
    await asyncio.sleep(0.2)  # the loop takes nothing more meanwhile
    assert stream.read <= 8 + 2, "the thread read on although nobody took what it read"
    for _ in range(20):
        await call.get()
    await asyncio.sleep(0.05)
    assert 21 <= stream.read <= 21 + 8 + 2
    call.close()  # the thread, blocked at the full hand-off, ends and closes the stream
    thread.join(2)
    assert not thread.is_alive()
    assert stream.closed.is_set()


async def test_the_event_loop_never_waits_for_the_blocking_reads() -> None:
    events = [{"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": str(n)}}} for n in range(3)]
    events += [{"messageStop": {"stopReason": "end_turn"}}]
    stream = _Stream(iter(events), delay=0.2)  # 0.8 s of blocking reads in all
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        chunks = await collect(BedrockProvider(_Client(stream)))  # type: ignore[arg-type]
    finally:
        ticker.cancel()
    assert text_of(chunks) == "012"
    # ~80 ticks fit in 0.8 s; a loop blocked by the reads would have run a handful
    assert ticks > 30, "the event loop was blocked while boto3 read"


@pytest.mark.parametrize(
    ("error", "code", "retryable"),
    [
        (NoCredentialsError(), "upstream_auth", False),
        (ReadTimeoutError(endpoint_url="https://bedrock"), "upstream_timeout", False),
        (
            EndpointConnectionError(endpoint_url="https://bedrock-runtime.us-east-1.amazonaws.com"),
            "upstream_error",
            True,
        ),
    ],
)
def test_botocore_errors_become_the_contract_codes(error: Exception, code: str, retryable: bool) -> None:
    mapped = _error(error)
    assert (mapped.code, mapped.retryable) == (code, retryable)
