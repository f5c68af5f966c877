"""One agent, every provider: the same events, usage, tool use and error codes over each wire format.

Client <- uvicorn <- app <- a fake upstream speaking the provider's real wire format: OpenAI's chat
completion chunks, Anthropic's Messages events, Bedrock's binary event-stream frames (read by boto3
itself), and a named endpoint (AGENTSTREAM_ENDPOINTS) speaking OpenAI's. Only ``model.provider``,
``model.name`` (and ``model.endpoint``) differ between the runs; each test asserts what a user sees
is the same. The Lambda leg is tests/functional/test_lambda_providers.py.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY
from tests.fakes.anthropic_upstream import AnthropicReply
from tests.fakes.bedrock_upstream import BedrockReply
from tests.fakes.openai_upstream import FakeOpenAI, RecordedRequest, Reply
from tests.support.server import SSEStream, read_sse, serve_in_thread

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
INSTRUCTIONS = "You are a terse calculator."
OPENAI_KEY, ANTHROPIC_KEY, ENDPOINT_KEY = "sk-openai-secret", "sk-ant-secret", "sk-endpoint-secret"
# characters of 1 to 4 UTF-8 bytes, a ZWJ sequence, a flag, a combining accent
TEXT = ["你好", "，世界！", "👨‍👩‍👧‍👦 family, ", "🇨🇳 flag, ", "e\u0301 combining, ", "नमस्ते", " done."]


@dataclass(frozen=True)
class Wire:
    """How one provider says the same things on the wire, and what the agent names to use it."""

    id: str
    model: dict[str, Any]
    key: str
    text: Callable[..., Reply]  # (*deltas, usage=(in, out) or None, pause=s)
    tool_call: Callable[[str, str, list[str]], Reply]  # (call id, tool, argument fragments)
    errors: dict[str, Reply]  # contract code -> an HTTP error answer that means it
    broken_after: Callable[[str], Reply]  # text, then a failure in the stream
    stall_after: Callable[[str], Reply]  # text, then nothing
    key_sent: Callable[[RecordedRequest], str]
    tool_result_sent: Callable[[RecordedRequest], Any]  # what the next call sent back as the result


def _openai_tool_call(call_id: str, name: str, fragments: list[str]) -> Reply:
    reply = Reply().tool_call(0, id=call_id, name=name, arguments="")
    for fragment in fragments:
        reply.tool_call(0, arguments=fragment)
    return reply.finish("tool_calls").usage(20, 8).done()


def _openai_errors() -> dict[str, Reply]:
    return {
        "upstream_auth": Reply.error(401, f"Incorrect API key provided: {OPENAI_KEY}"),
        "rate_limited": Reply(429, headers={"retry-after": "20"}).raw(
            '{"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}'
        ),
        "context_length_exceeded": Reply(400).raw(
            '{"error": {"message": "This model\'s maximum context length is 8192 tokens.",'
            ' "type": "invalid_request_error", "code": "context_length_exceeded"}}'
        ),
        "model_not_found": Reply(404).raw(
            '{"error": {"message": "The model `nope` does not exist", "type": "invalid_request_error",'
            ' "code": "model_not_found"}}'
        ),
        "upstream_error": Reply.error(500, "The server had an error", type="server_error"),
    }


OPENAI = Wire(
    id="openai",
    model={"provider": "openai", "name": "glm-4-flash"},
    key=OPENAI_KEY,
    text=lambda *deltas, usage=(10, 5), pause=0.0: Reply.chat(*deltas, usage=usage, pause=pause),
    tool_call=_openai_tool_call,
    errors=_openai_errors(),
    broken_after=lambda text: Reply().text(text).drop(),
    stall_after=lambda text: Reply().text(text).stall(),
    key_sent=lambda r: r.headers["authorization"].removeprefix("Bearer "),
    tool_result_sent=lambda r: r.json["messages"][-1],
)


def _anthropic_text(*deltas: str, usage: tuple[int, int] | None = (10, 5), pause: float = 0.0) -> Reply:
    reply = AnthropicReply().start(input_tokens=usage[0] if usage else None).ping()
    return reply.text(*deltas, pause=pause).stop(output_tokens=usage[1] if usage else None)


ANTHROPIC = Wire(
    id="anthropic",
    model={"provider": "anthropic", "name": "claude-sonnet-4-5"},
    key=ANTHROPIC_KEY,
    text=_anthropic_text,
    tool_call=lambda call_id, name, fragments: (
        AnthropicReply()
        .start(input_tokens=20)
        .tool_use(call_id, name, *fragments)
        .stop("tool_use", output_tokens=8)
    ),
    errors={
        "upstream_auth": AnthropicReply.api_error(
            401, "authentication_error", f"invalid x-api-key {ANTHROPIC_KEY}"
        ),
        "rate_limited": AnthropicReply.api_error(429, "rate_limit_error", "Rate limited", retry_after=20),
        "context_length_exceeded": AnthropicReply.api_error(
            400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"
        ),
        "model_not_found": AnthropicReply.api_error(404, "not_found_error", "model: nope"),
        "upstream_error": AnthropicReply.api_error(529, "overloaded_error", "Overloaded"),
    },
    broken_after=lambda text: (
        AnthropicReply().start().text(text).stream_error("overloaded_error", "Overloaded")
    ),
    stall_after=lambda text: AnthropicReply().start().text(text).stall(),
    key_sent=lambda r: r.headers["x-api-key"],
    tool_result_sent=lambda r: r.json["messages"][-1],
)


def _bedrock_text(*deltas: str, usage: tuple[int, int] | None = (10, 5), pause: float = 0.0) -> Reply:
    reply = BedrockReply().start().text(*deltas, pause=pause).stop("end_turn")
    return reply.metadata(*usage) if usage else reply


BEDROCK = Wire(
    id="bedrock",
    model={"provider": "bedrock", "name": "anthropic.claude-3-haiku-20240307-v1:0"},
    key="AWS4-HMAC-SHA256",  # no key: boto3 signs the request with the role's credentials
    text=_bedrock_text,
    tool_call=lambda call_id, name, fragments: (
        BedrockReply().start().tool_use(call_id, name, *fragments).stop("tool_use").metadata(20, 8)
    ),
    errors={
        "upstream_auth": BedrockReply.api_error(
            403, "AccessDeniedException", "You don't have access to the model with the specified model ID."
        ),
        "rate_limited": BedrockReply.api_error(429, "ThrottlingException", "Too many requests"),
        "context_length_exceeded": BedrockReply.api_error(
            400, "ValidationException", "Input is too long for requested model."
        ),
        "model_not_found": BedrockReply.api_error(
            400, "ValidationException", "The provided model identifier is invalid."
        ),
        "upstream_error": BedrockReply.api_error(500, "InternalServerException", "Internal error"),
    },
    broken_after=lambda text: (
        BedrockReply().start().text(text).exception("modelStreamErrorException", "boom")
    ),
    stall_after=lambda text: BedrockReply().start().text(text).stall(),
    key_sent=lambda r: r.headers["authorization"].split(" ")[0],
    tool_result_sent=lambda r: r.json["messages"][-1],
)

# A named endpoint that speaks OpenAI's wire format (Zhipu GLM, DeepSeek, vLLM...), its key elsewhere.
ENDPOINT = Wire(
    **{
        **OPENAI.__dict__,
        "id": "endpoint",
        "model": {"provider": "openai", "endpoint": "glm", "name": "glm-4-flash"},
        "key": ENDPOINT_KEY,
        "errors": {
            **_openai_errors(),
            "upstream_auth": Reply.error(401, f"Incorrect API key provided: {ENDPOINT_KEY}"),
        },
    }
)

WIRES = [OPENAI, ANTHROPIC, BEDROCK, ENDPOINT]


def _environment(fake: FakeOpenAI, retries: int) -> dict[str, str]:
    """Every provider configured at once, all of them pointing at the one fake upstream."""
    return {
        "AGENTSTREAM_ADMIN_KEY": ADMIN_KEY,
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": OPENAI_KEY,
        "ANTHROPIC_BASE_URL": fake.url,
        "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": fake.url,
        "AGENTSTREAM_ENDPOINTS": json.dumps(
            {"glm": {"provider": "openai", "base_url": fake.base_url, "api_key_env": "GLM_KEY"}}
        ),
        "GLM_KEY": ENDPOINT_KEY,
        "AGENTSTREAM_UPSTREAM_READ_TIMEOUT": "0.5",
        "AGENTSTREAM_UPSTREAM_RETRIES": str(retries),
    }


@contextmanager
def _serve(fake: FakeOpenAI, dynamodb: Any, wire: Wire, *, retries: int) -> Iterator[Stack]:
    """The app on uvicorn with every provider configured, and the agent of ``wire``."""
    from agentstream.config import Settings, get_settings
    from agentstream.store import Store
    from agentstream.web.app import create_app

    with pytest.MonkeyPatch.context() as env:
        for name, value in _environment(fake, retries).items():
            env.setenv(name, value)
        get_settings.cache_clear()
        settings = Settings()
        app = create_app(settings, Store("agentstream", dynamodb))
        with serve_in_thread(app) as url:
            yield Stack(wire, fake, url, _agent(url, wire))
    get_settings.cache_clear()


def _agent(base: str, wire: Wire) -> str:
    body = {"name": "calc", "instructions": INSTRUCTIONS, "model": wire.model, "tools": ["calculator"]}
    r = httpx.post(f"{base}/api/v1/agents", json=body, headers=AUTH)
    assert r.status_code == 201, r.text
    agent_id: str = r.json()["data"]["id"]
    return agent_id


_sessions = itertools.count()


@dataclass
class Stack:
    wire: Wire
    upstream: FakeOpenAI
    url: str
    agent: str

    def chat(self, message: str = "你好", **kwargs: Any) -> SSEStream:
        # a session of its own: no history of the module's earlier tests reaches the model
        body = {"message": message, "user_id": "u1", "session_id": f"s{next(_sessions)}"}
        return read_sse(f"{self.url}/api/v1/agents/{self.agent}/chat/stream", body, key=ADMIN_KEY, **kwargs)


@pytest.fixture(scope="module", params=WIRES, ids=[w.id for w in WIRES])
def stack_per_wire(request: pytest.FixtureRequest) -> Iterator[Stack]:
    """One app, fake upstream and table per provider, shared by the module's tests (starting them for
    each test would take longer than the tests)."""
    import boto3
    from moto import mock_aws

    from agentstream.store import create_table

    with FakeOpenAI() as upstream, mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        create_table("agentstream", dynamodb)
        with _serve(upstream, dynamodb, request.param, retries=0) as stack:
            yield stack


@pytest.fixture
def stack(stack_per_wire: Stack) -> Stack:
    assert stack_per_wire.upstream.pending == 0, "an earlier test left scripted replies behind"
    stack_per_wire.upstream.requests.clear()
    return stack_per_wire


def _seen(stream: SSEStream) -> list[Any]:
    """What a user sees, without what differs by nature between runs (ids, times)."""
    seen: list[Any] = []
    for event in stream.events:
        data = dict(event.data)
        for volatile in ("run_id", "agent_id", "session_id", "metrics", "message"):
            data.pop(volatile, None)
        seen.append(data)
    return seen


def test_text_streams_as_it_is_produced_with_the_same_events_and_usage(stack: Stack) -> None:
    wire, upstream = stack.wire, stack.upstream
    reply = wire.text("one ", "two ", "three", usage=(12, 3), pause=0.25)
    upstream.enqueue(reply)
    stream = stack.chat()
    contents = [e for e in stream.events if e.data["chunk_type"] == "content"]
    # each token reaches the client right after the upstream wrote it, not when the reply is complete
    writes = [w for w in reply.writes if isinstance(w, bytes) and w]
    sent_at = upstream.requests[0].sent_at
    for event, token in zip(contents, (b"one ", b"two ", b"three"), strict=True):
        written = sent_at[next(i for i, w in enumerate(writes) if token in w)]
        assert event.at - written < 0.3, token  # (a reply held to its end: 0.5 s for the first)
    assert contents[-1].at - contents[0].at > 0.4
    assert _seen(stream) == [
        {"chunk_type": "start"},
        {"chunk_type": "content", "content": "one "},
        {"chunk_type": "content", "content": "two "},
        {"chunk_type": "content", "content": "three"},
        {
            "chunk_type": "done",
            "status": "completed",
            "final_response": "one two three",
            "total_steps": 1,
            "memories_updated": True,
            "memories_count": 0,
            "usage": {"input_tokens": 12, "output_tokens": 3},
        },
    ]
    sent = upstream.requests[0]
    assert wire.key_sent(sent) == wire.key
    assert INSTRUCTIONS in sent.body.decode()
    assert "你好" in json.dumps(sent.json, ensure_ascii=False)


def test_characters_cut_across_tcp_writes_come_out_whole(stack: Stack) -> None:
    reply = stack.wire.text(*TEXT)
    stack.upstream.enqueue(reply.split_at(*range(3, len(reply.body()), 3)))
    stream = stack.chat()
    assert [e["content"] for e in stream.of("content")] == TEXT
    assert stream.events[-1].data["final_response"] == "".join(TEXT)
    assert "\ufffd" not in stream.raw.decode("utf-8")


def test_a_tool_round_trip_is_the_same(stack: Stack) -> None:
    wire = stack.wire
    stack.upstream.enqueue(
        wire.tool_call("call_1", "calculator", ['{"expre', 'ssion": "2+3', '*4"}']),
        wire.text("2+3*4 = ", "14", usage=(30, 6)),
    )
    stream = stack.chat("what is 2+3*4?")
    assert _seen(stream) == [
        {"chunk_type": "start"},
        {"chunk_type": "tool_call", "tool_call_id": "call_1", "tool_name": "calculator",
         "arguments": {"expression": "2+3*4"}},
        {"chunk_type": "tool_result", "tool_call_id": "call_1", "tool_name": "calculator", "content": "14",
         "is_error": False},
        {"chunk_type": "metadata", "data": {"progress": {"step": 2, "max_steps": 8}}},
        {"chunk_type": "content", "content": "2+3*4 = "},
        {"chunk_type": "content", "content": "14"},
        {"chunk_type": "done", "status": "completed", "final_response": "2+3*4 = 14", "total_steps": 2,
         "memories_updated": True, "memories_count": 0, "usage": {"input_tokens": 50, "output_tokens": 14}},
    ]  # fmt: skip
    result = json.dumps(wire.tool_result_sent(stack.upstream.requests[1]))
    assert "call_1" in result
    assert "14" in result


def test_usage_is_estimated_and_marked_when_the_upstream_reports_none(stack: Stack) -> None:
    stack.upstream.enqueue(stack.wire.text("a few words here", usage=None))
    done = stack.chat().events[-1].data
    assert done["status"] == "completed"
    assert done["usage"]["estimated"] is True
    assert done["usage"]["output_tokens"] == 1  # one content event


@pytest.mark.parametrize(
    "code", ["upstream_auth", "rate_limited", "context_length_exceeded", "model_not_found", "upstream_error"]
)
def test_each_failure_has_the_same_code_on_every_provider(stack: Stack, code: str) -> None:
    stack.upstream.enqueue(stack.wire.errors[code])
    stream = stack.chat()
    assert [e.data["chunk_type"] for e in stream.events] == ["start", "error", "done"]
    error, done = stream.events[1].data, stream.events[2].data
    assert error["code"] == code
    assert (done["status"], done["final_response"]) == ("error", "")
    for key in (OPENAI_KEY, ANTHROPIC_KEY, ENDPOINT_KEY):
        assert key not in stream.raw.decode()


def test_text_streamed_before_a_failure_stays_in_final_response(stack: Stack) -> None:
    stack.upstream.enqueue(stack.wire.broken_after("partial 回答"))
    stream = stack.chat()
    assert [e.data["chunk_type"] for e in stream.events] == ["start", "content", "error", "done"]
    assert stream.events[2].data["code"] == "upstream_error"
    assert stream.events[3].data["final_response"] == "partial 回答"
    assert len(stack.upstream.requests) == 1


def test_a_stalled_upstream_is_an_upstream_timeout(stack: Stack) -> None:
    stack.upstream.enqueue(stack.wire.stall_after("so far"))
    stream = stack.chat()
    assert stream.events[-2].data["code"] == "upstream_timeout"
    assert stream.events[-1].data["final_response"] == "so far"


def test_a_client_disconnect_closes_the_upstream_request(stack: Stack) -> None:
    stack.upstream.enqueue(stack.wire.stall_after("first "))
    stream = stack.chat(stop_after=2)
    gone = time.monotonic()
    assert [e.data["chunk_type"] for e in stream.events] == ["start", "content"]
    request = stack.upstream.requests[0]
    assert request.client_closed.wait(2.0)
    assert request.client_closed_at is not None
    assert request.client_closed_at - gone < 1.0


def test_the_json_route_answers_429_when_rate_limited(stack: Stack) -> None:
    stack.upstream.enqueue(stack.wire.errors["rate_limited"])
    r = httpx.post(
        f"{stack.url}/api/v1/agents/{stack.agent}/chat", json={"message": "hi"}, headers=AUTH, timeout=10
    )
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "rate_limited"
    # the provider's own wait, when it said one (Bedrock's throttling says none)
    assert r.headers.get("retry-after") == (None if stack.wire.id == "bedrock" else "20")


@pytest.mark.parametrize("wire", WIRES, ids=[w.id for w in WIRES])
def test_a_throttled_call_is_retried_before_the_first_token(
    fake_openai: FakeOpenAI, dynamodb: Any, wire: Wire
) -> None:
    throttled = {
        "openai": Reply(429, headers={"retry-after": "0"}).raw('{"error": {"message": "slow down"}}'),
        "endpoint": Reply(429, headers={"retry-after": "0"}).raw('{"error": {"message": "slow down"}}'),
        "anthropic": AnthropicReply.api_error(429, "rate_limit_error", "slow down", retry_after=0),
        "bedrock": BedrockReply.api_error(503, "ServiceUnavailableException", "try again"),
    }[wire.id]
    fake_openai.enqueue(throttled, wire.text("ok"))
    with _serve(fake_openai, dynamodb, wire, retries=1) as stack:
        stream = stack.chat()
    assert [e.data["chunk_type"] for e in stream.events] == ["start", "content", "done"]
    assert stream.events[-1].data["final_response"] == "ok"
    assert len(fake_openai.requests) == 2


def test_the_app_alone_routes_an_endpoint_agent_to_its_endpoint(
    fake_openai: FakeOpenAI, dynamodb: Any
) -> None:
    fake_openai.enqueue(ENDPOINT.text("ok"))
    with _serve(fake_openai, dynamodb, ENDPOINT, retries=0) as stack:
        stream = stack.chat()
    assert stream.events[-1].data["status"] == "completed"
    assert ENDPOINT.key_sent(fake_openai.requests[-1]) == ENDPOINT_KEY
