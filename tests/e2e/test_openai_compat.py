"""The OpenAI-compatible API with the real `openai` Python SDK against uvicorn: an agent is a model.

Nothing here parses the wire format by hand: what the SDK makes of the answers is what a user gets.
The model is the scripted provider, or the fake OpenAI upstream where the test needs to see what the
agent sent to its model.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from agentstream.errors import AgentStreamError
from tests.conftest import ADMIN_KEY
from tests.fakes.openai_upstream import FakeOpenAI, Reply
from tests.support.server import serve_in_thread

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
REPLY = "流式输出，一字不差 🙂 and exact."
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def create_agent(base: str, *, name: str = "helper", tools: list[str] | None = None, **model: Any) -> str:
    spec = {"provider": "scripted", "name": "s", **model}
    body = {"name": name, "model": spec, "tools": tools or []}
    r = httpx.post(f"{base}/api/v1/agents", json=body, headers=AUTH)
    assert r.status_code == 201, r.text
    agent_id: str = r.json()["data"]["id"]
    return agent_id


def client(base: str, key: str = ADMIN_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=20)


@pytest.fixture
def api(live_server: str) -> Iterator[openai.OpenAI]:
    with client(live_server) as sdk:
        yield sdk


def test_models_are_the_callers_agents(live_server: str, api: openai.OpenAI) -> None:
    agents = {create_agent(live_server, name=f"a{i}") for i in range(3)}
    models = api.models.list()
    assert {m.id for m in models.data} == agents
    assert all(m.object == "model" and m.owned_by == "agentstream" and m.created > 0 for m in models.data)
    # another tenant sees none of them
    r = httpx.post(f"{live_server}/api/v1/keys", json={"tenant": "acme", "name": "k"}, headers=AUTH)
    assert r.status_code == 201, r.text
    with client(live_server, r.json()["data"]["key"]) as other:
        assert other.models.list().data == []


def test_a_streamed_reply_is_exact_and_arrives_as_the_model_produces_it(
    live_server: str, api: openai.OpenAI
) -> None:
    agent = create_agent(live_server, options={"reply": REPLY, "delta_chars": 3, "delay_ms": 80})
    start = time.monotonic()
    stream = api.chat.completions.create(
        model=agent,
        messages=[{"role": "user", "content": "go"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = []
    arrivals = []
    for chunk in stream:
        chunks.append(chunk)
        arrivals.append(time.monotonic())
    assert chunks[0].choices[0].delta.role == "assistant"
    assert arrivals[0] - start < 0.5  # the role chunk leaves when the run starts
    contents = [(c.choices[0].delta.content, at) for c, at in zip(chunks, arrivals, strict=True) if c.choices]
    text = "".join(t or "" for t, _ in contents)
    assert text == REPLY
    deltas = [at for t, at in contents if t]
    assert len(deltas) == len(range(0, len(REPLY), 3))
    # 80 ms apart at the model, so spread out on arrival: never generate-then-split
    assert deltas[-1] - deltas[0] > 0.07 * (len(deltas) - 1)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == len(REPLY.split())
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert {c.id for c in chunks} == {chunks[0].id}
    assert chunks[0].id.startswith("chatcmpl-run_")
    assert all(c.model == agent and c.object == "chat.completion.chunk" for c in chunks)


def test_without_include_usage_no_usage_chunk(live_server: str, api: openai.OpenAI) -> None:
    agent = create_agent(live_server, options={"reply": "short", "delay_ms": 0})
    chunks = list(
        api.chat.completions.create(model=agent, messages=[{"role": "user", "content": "go"}], stream=True)
    )
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "short"


def test_a_whole_completion_and_the_model_by_name(live_server: str, api: openai.OpenAI) -> None:
    create_agent(live_server, name="helper", options={"reply": REPLY, "delay_ms": 0})
    done = api.chat.completions.create(
        model="helper",
        messages=[
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        ],
        user="u-1",
    )
    assert done.object == "chat.completion"
    assert done.model == "helper"
    choice = done.choices[0]
    assert (choice.message.role, choice.message.content, choice.finish_reason) == ("assistant", REPLY, "stop")
    assert choice.message.tool_calls is None
    assert done.usage is not None
    assert done.usage.completion_tokens == len(REPLY.split())


def test_the_agents_own_tools_run_on_the_server_unseen(live_server: str, api: openai.OpenAI) -> None:
    agent = create_agent(live_server, tools=["calculator"], options={"delay_ms": 0})
    chunks = list(
        api.chat.completions.create(
            model=agent, messages=[{"role": "user", "content": "what is 2+3*4?"}], stream=True
        )
    )
    assert all(c.choices[0].delta.tool_calls is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "The result is 14."
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.fixture
def upstream_server(fake_openai: FakeOpenAI, dynamodb: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The app with the `openai` provider pointed at the fake upstream."""
    from agentstream.config import Settings
    from agentstream.store import Store
    from agentstream.web.app import create_app

    monkeypatch.setenv("AGENTSTREAM_ADMIN_KEY", ADMIN_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with serve_in_thread(create_app(Settings(), Store("agentstream", dynamodb))) as url:
        yield url


@pytest.mark.parametrize("stream", [True, False])
def test_client_tools_round_trip(
    upstream_server: str, fake_openai: FakeOpenAI, stream: bool, request: pytest.FixtureRequest
) -> None:
    base = upstream_server
    r = httpx.post(
        f"{base}/api/v1/agents",
        json={"name": "w", "model": {"provider": "openai", "name": "m"}, "tools": ["calculator"]},
        headers=AUTH,
    )
    agent = r.json()["data"]["id"]
    # step 1 calls the agent's calculator (server side), step 2 the client's get_weather
    fake_openai.enqueue(
        Reply()
        .tool_call(0, id="call_calc", name="calculator", arguments='{"expression":"1+1"}')
        .finish("tool_calls")
        .done()
    )
    fake_openai.enqueue(
        Reply()
        .text("Let me look. ")
        .tool_call(0, id="call_w1", name="get_weather", arguments='{"city":')
        .tool_call(0, arguments='"Paris"}')
        .finish("tool_calls")
        .usage(20, 7)
        .done()
    )
    fake_openai.enqueue(Reply.chat("It is sunny in Paris.", usage=(30, 6)))
    api = client(base)
    request.addfinalizer(api.close)
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        chunks = list(
            api.chat.completions.create(model=agent, messages=messages, tools=[WEATHER_TOOL], stream=True)
        )
        calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
        assert [(tc.index, tc.id, tc.type) for tc in calls] == [(0, "call_w1", "function")]
        assert calls[0].function is not None
        name, arguments = calls[0].function.name, calls[0].function.arguments
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
    else:
        done = api.chat.completions.create(model=agent, messages=messages, tools=[WEATHER_TOOL])
        message = done.choices[0].message
        assert done.choices[0].finish_reason == "tool_calls"
        assert message.tool_calls is not None
        (call,) = message.tool_calls
        assert call.id == "call_w1"
        name, arguments, text = call.function.name, call.function.arguments, message.content or ""
    assert name == "get_weather"
    assert json.loads(arguments or "") == {"city": "Paris"}
    assert text == "Let me look. "
    # both the agent's tool and the client's were offered to the model
    offered = [t["function"]["name"] for t in fake_openai.requests[0].json["tools"]]
    assert offered == ["calculator", "get_weather"]

    # the usual client-side loop: append the assistant message and the tool's result, ask again
    messages += [
        {
            "role": "assistant",
            "content": text,
            "tool_calls": [
                {"id": "call_w1", "type": "function", "function": {"name": name, "arguments": arguments}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_w1", "content": "sunny, 21 °C"},
    ]
    answer = api.chat.completions.create(model=agent, messages=messages, tools=[WEATHER_TOOL])
    assert answer.choices[0].message.content == "It is sunny in Paris."
    assert answer.choices[0].finish_reason == "stop"
    sent = fake_openai.requests[-1].json["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool"]
    assert sent[2]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert (sent[3]["tool_call_id"], sent[3]["content"]) == ("call_w1", "sunny, 21 °C")


def test_a_session_header_keeps_the_turn(live_server: str, api: openai.OpenAI) -> None:
    agent = create_agent(live_server, options={"reply": "noted", "delay_ms": 0})
    for session in ("s1", None):
        api.chat.completions.create(
            model=agent,
            messages=[{"role": "user", "content": "remember nothing"}],
            user="u1",
            extra_headers={"X-Session-Id": session} if session else None,
        )
    r = httpx.get(f"{live_server}/api/v1/agents/{agent}/sessions", params={"user_id": "u1"}, headers=AUTH)
    assert [s["session_id"] for s in r.json()["data"]] == ["s1"]
    r = httpx.get(
        f"{live_server}/api/v1/agents/{agent}/sessions/s1/messages", params={"user_id": "u1"}, headers=AUTH
    )
    assert [(m["role"], m["content"]) for m in r.json()["data"]] == [
        ("user", "remember nothing"),
        ("assistant", "noted"),
    ]


def test_errors_are_the_sdks_exceptions(live_server: str, api: openai.OpenAI, app: Any) -> None:
    agent = create_agent(live_server, name="twin", options={"delay_ms": 0})
    create_agent(live_server, name="twin")
    user = [{"role": "user", "content": "hi"}]

    with client(live_server, "wrong") as wrong, pytest.raises(openai.AuthenticationError) as auth:
        wrong.chat.completions.create(model=agent, messages=user)  # type: ignore[arg-type]
    assert auth.value.status_code == 401
    assert auth.value.type == "authentication_error"

    with pytest.raises(openai.NotFoundError) as missing:
        api.chat.completions.create(model="nobody", messages=user)  # type: ignore[arg-type]
    assert missing.value.code == "model_not_found"
    assert missing.value.type == "invalid_request_error"

    with pytest.raises(openai.UnprocessableEntityError) as ambiguous:
        api.chat.completions.create(model="twin", messages=user, stream=True)  # type: ignore[arg-type]
    assert ambiguous.value.code == "ambiguous_model"

    with pytest.raises(openai.UnprocessableEntityError) as invalid:
        api.chat.completions.create(model=agent, messages=[{"role": "assistant", "content": "hi"}])
    assert invalid.value.code == "invalid_request"
    assert "last message" in invalid.value.message

    with pytest.raises(openai.UnprocessableEntityError) as invalid:
        api.chat.completions.create(model=agent, messages=[])
    assert invalid.value.param == "messages"

    async def throttled(name: str, settings: Any) -> Any:
        error = AgentStreamError("too many runs", code="rate_limited", status=429)
        error.retry_after = 3  # type: ignore[attr-defined]
        raise error

    app.state.chat._providers = throttled
    with pytest.raises(openai.RateLimitError) as limited:
        api.chat.completions.create(model=agent, messages=user, stream=True)  # type: ignore[arg-type]
    assert limited.value.code == "rate_limited"
    assert limited.value.type == "rate_limit_error"
    assert limited.value.response.headers["retry-after"] == "3"


def test_an_error_inside_a_started_stream(live_server: str, api: openai.OpenAI) -> None:
    agent = create_agent(live_server, options={"reply": "abcdefghij", "delta_chars": 2, "fail_after": 3})
    received = []
    with pytest.raises(openai.APIError) as failed:  # noqa: PT012 (the error comes mid-iteration)
        for chunk in api.chat.completions.create(
            model=agent, messages=[{"role": "user", "content": "go"}], stream=True
        ):
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "abcdef"  # what came before the failure
    assert failed.value.code == "upstream_error"
    assert failed.value.type == "server_error"
    assert "fail_after" in failed.value.message

    with pytest.raises(openai.APIStatusError) as whole:
        api.chat.completions.create(model=agent, messages=[{"role": "user", "content": "go"}])
    assert whole.value.status_code == 502
    assert whole.value.code == "upstream_error"


def test_a_run_that_times_out_or_is_cancelled_ends_with_an_error(
    live_server: str, api: openai.OpenAI, app: Any
) -> None:
    agent = create_agent(live_server, options={"reply": "abcdefgh", "delta_chars": 2, "stall_after": 2})
    user = [{"role": "user", "content": "go"}]
    stream = api.chat.completions.create(model=agent, messages=user, stream=True)  # type: ignore[arg-type]
    first = next(stream)
    run_id = first.id.removeprefix("chatcmpl-")
    assert httpx.post(f"{live_server}/api/v1/runs/{run_id}/cancel", headers=AUTH).status_code == 202
    with pytest.raises(openai.APIError) as cancelled:
        list(stream)
    assert cancelled.value.code == "cancelled"

    app.state.settings.max_run_seconds = 2.0  # the run's deadline comes 1.5 s (the margin) before it
    with pytest.raises(openai.APIError) as timed_out:
        list(api.chat.completions.create(model=agent, messages=user, stream=True))  # type: ignore[arg-type]
    assert (timed_out.value.code, timed_out.value.type) == ("timeout", "server_error")
    with pytest.raises(openai.InternalServerError) as whole:
        api.chat.completions.create(model=agent, messages=user)  # type: ignore[arg-type]
    assert (whole.value.status_code, whole.value.code) == (504, "timeout")


def test_the_compatible_routes_are_in_the_openapi_document(live_server: str) -> None:
    r = httpx.get(f"{live_server}/openapi.json", headers=AUTH)
    assert r.status_code == 200, r.text
    paths = r.json()["paths"]
    for path in (
        "/v1/models",
        "/v1/chat/completions",
        "/api/v1/agents/{agent_id}/chat/ui",
        "/api/v1/agents/{agent_id}/chat/ui/{chat_id}/stream",
        "/api/v1/agents/{agent_id}/chat/stream",
    ):
        assert path in paths
