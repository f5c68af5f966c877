"""The real app on the Lambda path: streaming runtime (subprocess) -> stream handler -> agentstream app,
with DynamoDB on moto's server and the model on the fake OpenAI upstream."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from agentstream.core.agents import AgentSpec, ModelConfig
from agentstream.store import Store, create_table
from tests.conftest import ADMIN_KEY, load_event
from tests.fakes.openai_upstream import FakeOpenAI, Reply
from tests.functional.runtime_api_emulator import Result, RuntimeApiEmulator
from tests.functional.test_streaming_runtime import answer, runtime
from tests.support.server import free_port, parse_sse

pytestmark = pytest.mark.anyio


@pytest.fixture
def lambda_env(fake_openai: FakeOpenAI) -> Iterator[dict[str, str]]:
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{port}"
    create_table("agentstream", boto3.client("dynamodb", endpoint_url=endpoint))
    try:
        yield {
            "AWS_ENDPOINT_URL_DYNAMODB": endpoint,
            "AGENTSTREAM_ADMIN_KEY": ADMIN_KEY,
            "OPENAI_BASE_URL": fake_openai.base_url,
            "AGENTSTREAM_DEADLINE_MARGIN_MS": "500",
        }
    finally:
        moto.stop()


async def _agent(env: dict[str, str]) -> str:
    store = Store("agentstream", boto3.client("dynamodb", endpoint_url=env["AWS_ENDPOINT_URL_DYNAMODB"]))
    agent = await store.agents.create(
        "default", AgentSpec(name="l", model=ModelConfig(provider="openai", name="m"))
    )
    return agent.id


def _chat_event(agent: str, message: str) -> dict[str, Any]:
    event = load_event("function_url_v2.json")
    path = f"/api/v1/agents/{agent}/chat/stream"
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["rawQueryString"] = ""
    event.pop("queryStringParameters", None)
    event["headers"]["authorization"] = f"Bearer {ADMIN_KEY}"
    event["body"] = json.dumps({"message": message, "user_id": "lambda"})
    return event


def _events(result: Result) -> list[tuple[int, dict[str, Any]]]:
    return parse_sse(result.streamed_body)


async def test_the_app_streams_through_the_runtime_token_by_token(
    tmp_path: Path, fake_openai: FakeOpenAI, lambda_env: dict[str, str]
) -> None:
    deltas = ["你好", "，", "世界", "！🙂"]
    fake_openai.enqueue(Reply.chat(*deltas, pause=0.3))
    agent = await _agent(lambda_env)
    async with (
        RuntimeApiEmulator() as emulator,
        runtime(emulator, tmp_path, handler="agentstream.handlers.stream.handler", env=lambda_env),
    ):
        result = await answer(emulator.invoke(_chat_event(agent, "你好")))
    emulator.assert_clean()
    assert result.kind == "streamed"
    assert result.prelude is not None
    assert result.prelude["statusCode"] == 200
    assert result.prelude["headers"]["content-type"] == "text/event-stream; charset=utf-8"
    assert result.prelude["headers"]["x-accel-buffering"] == "no"
    events = _events(result)
    assert [e["chunk_type"] for _, e in events] == [
        "start",
        "content",
        "content",
        "content",
        "content",
        "done",
    ]
    assert events[-1][1]["final_response"] == "".join(deltas)
    # each content event reaches the Runtime API right after the upstream wrote its token
    token_sent = fake_openai.requests[0].sent_at[1 : 1 + len(deltas)]
    content_arrived = [c.at for c in result.chunks if b'"chunk_type":"content"' in c.data]
    assert len(content_arrived) == len(deltas)
    latencies = [arrived - sent for sent, arrived in zip(token_sent, content_arrived, strict=True)]
    # (the median, so one scheduling hiccup on a busy 2-core machine does not decide the test)
    assert statistics.median(latencies) < 0.02, latencies
    assert max(latencies) < 0.15, latencies


async def test_a_run_near_the_deadline_ends_with_timeout_and_the_next_invocation_works(
    tmp_path: Path, fake_openai: FakeOpenAI, lambda_env: dict[str, str]
) -> None:
    fake_openai.enqueue(Reply().text("so far ").stall(), Reply.chat("fine"))
    agent = await _agent(lambda_env)
    async with (
        RuntimeApiEmulator() as emulator,
        runtime(emulator, tmp_path, handler="agentstream.handlers.stream.handler", env=lambda_env),
    ):
        # the deadline counts from the invocation, as Lambda's does: not from before the init finished
        await asyncio.wait_for(emulator.polled.wait(), 30)
        deadline_ms = int(time.time() * 1000) + 2_500
        first = await answer(emulator.invoke(_chat_event(agent, "slow"), deadline_ms=deadline_ms))
        ended = time.time() * 1000
        second = await answer(emulator.invoke(_chat_event(agent, "again")))
    emulator.assert_clean()
    done = _events(first)[-1][1]
    assert (done["chunk_type"], done["status"], done["final_response"]) == ("done", "timeout", "so far ")
    assert ended < deadline_ms  # ended cleanly before Lambda would have killed it
    assert first.trailers == {}
    assert _events(second)[-1][1]["final_response"] == "fine"
