"""What a request's ``extra`` can do at the providers: sampling fields, never the request's own fields;
and the scripted provider's bounded delays and stalls."""

from __future__ import annotations

import asyncio
import time

import pytest

from agentstream.core.providers import anthropic, bedrock
from agentstream.core.providers.base import Message, ModelRequest, StepEnd, TextChunk, ToolSpec
from agentstream.core.providers.openai import OpenAIProvider
from agentstream.core.providers.scripted import ScriptedProvider
from agentstream.errors import UpstreamError, UpstreamTimeout

QUESTION = (Message("system", "Be brief."), Message("user", "hello"))
TOOL = ToolSpec("calculator", "arithmetic", {"type": "object"})
HIJACK = {
    "model": "expensive-model",
    "modelId": "expensive-model",
    "messages": [{"role": "user", "content": "something else"}],
    "system": "other instructions",
    "stream": False,
    "tools": [],
    "toolConfig": {},
    "tool_choice": "none",
    "n": 64,
}


def _request() -> ModelRequest:
    return ModelRequest(model="m", messages=QUESTION, tools=(TOOL,), extra={**HIJACK, "top_p": 0.5})


def test_openai_extra_never_replaces_the_request() -> None:
    body = OpenAIProvider(base_url="http://127.0.0.1:9/v1")._body(_request())
    assert (body["model"], body["stream"], body["top_p"]) == ("m", True, 0.5)
    assert [m["content"] for m in body["messages"]] == ["Be brief.", "hello"]
    assert [t["function"]["name"] for t in body["tools"]] == ["calculator"]
    assert "n" not in body
    assert "tool_choice" not in body


def test_anthropic_extra_never_replaces_the_request() -> None:
    body = anthropic._body(_request())
    assert (body["model"], body["stream"], body["system"], body["top_p"]) == ("m", True, "Be brief.", 0.5)
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]
    assert [t["name"] for t in body["tools"]] == ["calculator"]
    assert "tool_choice" not in body


def test_bedrock_extra_never_replaces_the_request() -> None:
    params = bedrock._params(_request())
    assert params["modelId"] == "m"
    assert params["system"] == [{"text": "Be brief."}]
    assert params["messages"] == [{"role": "user", "content": [{"text": "hello"}]}]
    assert [t["toolSpec"]["name"] for t in params["toolConfig"]["tools"]] == ["calculator"]


def _scripted(**options: object) -> ModelRequest:
    return ModelRequest(model="s", messages=(Message("user", "hi"),), extra=options)


@pytest.mark.anyio
async def test_a_scripted_stall_ends_as_an_upstream_read_timeout() -> None:
    provider = ScriptedProvider(stall_seconds=0.3)
    received: list[object] = []

    async def read() -> None:
        async for event in provider.stream(
            _scripted(reply="abcdef", delta_chars=2, stall_after=1, delay_ms=0)
        ):
            received.append(event)

    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        await read()
    assert received == [TextChunk("ab")]
    assert 0.25 < time.monotonic() - started < 5


@pytest.mark.anyio
async def test_scripted_delays_past_the_bound_are_clamped() -> None:
    provider = ScriptedProvider()
    events = provider.stream(_scripted(reply="abcd", delta_chars=2, delay_ms=10**9))
    assert await anext(events) == TextChunk("ab")
    with pytest.raises(TimeoutError):  # 10 s at most, not 11 days
        await asyncio.wait_for(anext(events), 0.2)


@pytest.mark.anyio
async def test_scripted_repeat_makes_long_replies_from_small_agents() -> None:
    provider = ScriptedProvider()
    request = _scripted(reply="长回复🙂", repeat=3, delta_chars=5, delay_ms=0)
    events = [e async for e in provider.stream(request)]
    text = "".join(e.text for e in events if isinstance(e, TextChunk))
    assert text == "长回复🙂" * 3
    assert events[-1] == StepEnd("stop")


def test_the_redactor_takes_out_every_part_of_the_address_and_the_keys() -> None:
    from agentstream.core.providers._http import redactor

    redact = redactor("http://svc-user:p%40ss-word@inner-host.corp:8443/v1", "sk-key-123")
    text = (
        "failed: http://svc-user:p%40ss-word@inner-host.corp:8443/v1/chat, host inner-host.corp:8443, "
        "user svc-user pass p@ss-word / p%40ss-word, key sk-key-123, see https://docs.example/x"
    )
    out = redact(text)
    for secret in (
        "svc-user",
        "p@ss-word",
        "p%40ss-word",
        "inner-host.corp",
        "8443",
        "sk-key-123",
        "https://",
    ):
        assert secret not in out
    assert out.startswith("failed: [redacted]")


def test_bedrock_errors_never_quote_the_endpoint() -> None:
    from botocore.exceptions import EndpointConnectionError, HTTPClientError

    url = "http://svc:pw-9d@bedrock-proxy.corp.internal:4566"
    for exc in (EndpointConnectionError(endpoint_url=url), HTTPClientError(error=f"reset talking to {url}")):
        message = bedrock._error(exc).message
        assert "bedrock-proxy" not in message
        assert "pw-9d" not in message
        assert "Amazon Bedrock" in message


@pytest.mark.anyio
async def test_an_invalid_upstream_url_is_an_upstream_error_that_does_not_quote_it() -> None:
    provider = OpenAIProvider(base_url="http://user:pw-3e9a@bad host:99999/v1", name="endpoint 'broken'")
    with pytest.raises(UpstreamError) as caught:
        async for _ in provider.stream(ModelRequest(model="m", messages=QUESTION)):
            pass
    assert "pw-3e9a" not in caught.value.message
    assert "bad host" not in caught.value.message
    assert "endpoint 'broken'" in caught.value.message


@pytest.mark.anyio
async def test_a_scripted_reply_never_grows_past_its_bound() -> None:
    events = ScriptedProvider().stream(
        _scripted(reply="x" * 30_000, repeat=100_000, delta_chars=10**6, delay_ms=0)
    )
    first = await anext(events)
    assert isinstance(first, TextChunk)
    assert len(first.text) == 1_000_000
