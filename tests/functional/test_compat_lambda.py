"""The compatible APIs through the emulated Lambda path (streaming runtime + handler), with the real
clients: the `openai` Python SDK and the AI SDK's DefaultChatTransport (npm `ai` 5 and 7) in node."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import ADMIN_KEY
from tests.functional.lambda_front import LambdaFunctionUrl
from tests.support.ui_client import SDKS, run_ui_client

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
REPLY = "Through Lambda: 流式输出 🙂 token by token, exactly."
CALCULATOR: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "arithmetic, run by the client",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}},
    },
}


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # two invocation slots: a resume request is served while the answer it resumes still runs
    env = {"AGENTSTREAM_ADMIN_KEY": ADMIN_KEY, "AWS_LAMBDA_MAX_CONCURRENCY": "2"}
    with LambdaFunctionUrl(tmp_path_factory.mktemp("lambda"), env) as base:
        yield base


def create_agent(base: str, tools: list[str] | None = None, **options: Any) -> str:
    model = {"provider": "scripted", "name": "s", "options": {"delay_ms": 0, **options}}
    body = {"name": "lambda", "model": model, "tools": tools or []}
    r = httpx.post(f"{base}/api/v1/agents", json=body, headers=AUTH, timeout=20)
    assert r.status_code == 201, r.text
    agent_id: str = r.json()["data"]["id"]
    return agent_id


@pytest.fixture
def api(url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{url}/v1", api_key=ADMIN_KEY, max_retries=0, timeout=20) as sdk:
        yield sdk


def test_openai_sdk_streams_through_lambda(url: str, api: openai.OpenAI) -> None:
    agent = create_agent(url, reply=REPLY, delta_chars=4, delay_ms=60)
    arrivals: list[tuple[float, str]] = []
    usage = None
    for chunk in api.chat.completions.create(
        model=agent,
        messages=[{"role": "user", "content": "go"}],
        stream=True,
        stream_options={"include_usage": True},
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append((time.monotonic(), chunk.choices[0].delta.content))
        usage = chunk.usage or usage
    assert "".join(text for _, text in arrivals) == REPLY
    assert arrivals[-1][0] - arrivals[0][0] > 0.04 * (len(arrivals) - 1)  # streamed, not buffered
    assert usage is not None
    assert usage.completion_tokens == len(REPLY.split())
    with pytest.raises(openai.NotFoundError):
        api.chat.completions.create(model="nobody", messages=[{"role": "user", "content": "go"}])


def test_openai_sdk_client_tool_round_trip_through_lambda(url: str, api: openai.OpenAI) -> None:
    agent = create_agent(url)  # no tools of its own: the calculator is the client's
    messages: list[Any] = [{"role": "user", "content": "what is 6*7?"}]
    chunks = list(
        api.chat.completions.create(model=agent, messages=messages, tools=[CALCULATOR], stream=True)
    )
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    (call,) = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert call.function is not None
    assert (call.function.name, json.loads(call.function.arguments or "")) == (
        "calculator",
        {"expression": "6*7"},
    )
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude={"index"})]},
        {"role": "tool", "tool_call_id": call.id, "content": "42"},
    ]
    answer = api.chat.completions.create(model=agent, messages=messages, tools=[CALCULATOR])
    assert (answer.choices[0].message.content, answer.choices[0].finish_reason) == (
        "The result is 42.",
        "stop",
    )


@pytest.mark.parametrize("sdk", SDKS)
def test_ai_sdk_tool_call_and_resume_through_lambda(url: str, sdk: str) -> None:
    api = f"{url}/api/v1/agents/{create_agent(url, tools=['calculator'])}/chat/ui"
    out = run_ui_client(
        sdk=sdk, mode="send", api=api, key=ADMIN_KEY, chatId=f"l-{sdk}", text="what is 2+3*4?"
    )
    assert out["errors"] == []
    tool, text = [p for p in out["message"]["parts"] if p["type"] != "step-start"]
    assert (tool["type"], tool["input"], tool["output"]) == ("tool-calculator", {"expression": "2+3*4"}, "14")
    assert text["text"] == "The result is 14."

    api = f"{url}/api/v1/agents/{create_agent(url, reply=REPLY, delta_chars=2, delay_ms=40)}/chat/ui"
    out = run_ui_client(
        sdk=sdk, mode="reload", api=api, key=ADMIN_KEY, chatId=f"r-{sdk}", text="go", stopAfterChars=6
    )
    before = "".join(p["text"] for p in out["first"]["message"]["parts"] if p["type"] == "text")
    assert REPLY.startswith(before)
    assert len(before) < len(REPLY)
    resumed = out["resumed"]
    assert resumed["errors"] == []
    assert [p["text"] for p in resumed["message"]["parts"] if p["type"] == "text"] == [REPLY]
    assert resumed["types"][-1] == "finish"
