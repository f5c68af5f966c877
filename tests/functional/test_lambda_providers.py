"""The same agent over openai, anthropic, bedrock and a named endpoint through the Lambda path: the
streaming runtime (subprocess) -> stream handler -> app -> the fake upstream speaking each wire format.

One runtime serves every provider (all configured at once, all pointed at the one fake upstream): the
agents differ only in ``model.provider`` and ``model.name``, and what reaches the Runtime API must be
the same events, usage, tool use and error codes, streamed token by token.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from agentstream.config import get_settings
from agentstream.core.agents import AgentSpec, ModelConfig
from agentstream.store import Store, create_table
from tests.conftest import ADMIN_KEY
from tests.e2e.test_providers import (
    ANTHROPIC,
    ANTHROPIC_KEY,
    BEDROCK,
    ENDPOINT,
    ENDPOINT_KEY,
    INSTRUCTIONS,
    OPENAI,
    OPENAI_KEY,
    Wire,
)
from tests.fakes.openai_upstream import FakeOpenAI
from tests.functional.runtime_api_emulator import Result, RuntimeApiEmulator
from tests.functional.test_lambda_app import _chat_event
from tests.functional.test_streaming_runtime import answer, runtime
from tests.support.server import free_port, parse_sse

pytestmark = pytest.mark.anyio

WIRES = [OPENAI, ANTHROPIC, BEDROCK, ENDPOINT]


@pytest.fixture
def lambda_env(fake_openai: FakeOpenAI) -> Iterator[dict[str, str]]:
    """The function's environment: DynamoDB on moto's server, every provider at the fake upstream."""
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
            "OPENAI_API_KEY": OPENAI_KEY,
            "ANTHROPIC_BASE_URL": fake_openai.url,
            "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
            "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": fake_openai.url,
            "AGENTSTREAM_ENDPOINTS": json.dumps(
                {"glm": {"provider": "openai", "base_url": fake_openai.base_url, "api_key_env": "GLM_KEY"}}
            ),
            "GLM_KEY": ENDPOINT_KEY,
            "AGENTSTREAM_UPSTREAM_RETRIES": "0",
        }
    finally:
        moto.stop()


async def _agent(env: dict[str, str], wire: Wire) -> str:
    store = Store("agentstream", boto3.client("dynamodb", endpoint_url=env["AWS_ENDPOINT_URL_DYNAMODB"]))
    spec = AgentSpec(
        name="calc", instructions=INSTRUCTIONS, model=ModelConfig(**wire.model), tools=["calculator"]
    )
    return (await store.agents.create("default", spec)).id


def _seen(result: Result) -> list[dict[str, Any]]:
    seen = []
    for _, data in parse_sse(result.streamed_body):
        for volatile in ("run_id", "agent_id", "session_id", "metrics", "message"):
            data.pop(volatile, None)
        seen.append(data)
    return seen


def _json_chat_event(agent: str, message: str) -> dict[str, Any]:
    event = _chat_event(agent, message)
    event["rawPath"] = event["requestContext"]["http"]["path"] = f"/api/v1/agents/{agent}/chat"
    return event


async def test_the_same_agent_streams_the_same_on_every_provider_through_lambda(
    tmp_path: Any, fake_openai: FakeOpenAI, lambda_env: dict[str, str]
) -> None:
    env = lambda_env
    with pytest.MonkeyPatch.context() as here:  # the agent names an endpoint this process must know too
        for name in ("AGENTSTREAM_ENDPOINTS", "GLM_KEY"):
            here.setenv(name, env[name])
        get_settings.cache_clear()
        agents = {wire.id: await _agent(env, wire) for wire in WIRES}
    get_settings.cache_clear()
    seen: dict[str, list[dict[str, Any]]] = {}
    failures: dict[str, tuple[str, int]] = {}
    async with (
        RuntimeApiEmulator() as emulator,
        runtime(emulator, tmp_path, handler="agentstream.handlers.stream.handler", env=env),
    ):
        for wire in WIRES:
            fake_openai.requests.clear()
            answer_text = wire.text("2+3*4 ", "= ", "14", usage=(30, 6), pause=0.1)
            fake_openai.enqueue(
                wire.tool_call("call_1", "calculator", ['{"expre', 'ssion": "2+3*4"}']), answer_text
            )
            result = await answer(emulator.invoke(_chat_event(agents[wire.id], "what is 2+3*4?")))
            assert result.kind == "streamed", wire.id
            seen[wire.id] = _seen(result)
            # each token reached the Runtime API right after the upstream wrote it
            writes = [w for w in answer_text.writes if isinstance(w, bytes) and w]
            sent_at = fake_openai.requests[1].sent_at
            arrivals = [c.at for c in result.chunks if b'"chunk_type":"content"' in c.data]
            written = [
                sent_at[next(i for i, w in enumerate(writes) if t in w)] for t in (b"2+3*4 ", b"= ", b"14")
            ]
            latencies = [a - w for a, w in zip(arrivals, written, strict=True)]
            assert statistics.median(latencies) < 0.05, (wire.id, latencies)
            # a provider failure: the same code in the stream, and 429 on the JSON route
            fake_openai.enqueue(wire.errors["rate_limited"], wire.errors["rate_limited"])
            streamed = await answer(emulator.invoke(_chat_event(agents[wire.id], "again")))
            buffered = await answer(emulator.invoke(_json_chat_event(agents[wire.id], "again")))
            code = [e["code"] for e in _seen(streamed) if e["chunk_type"] == "error"]
            assert buffered.prelude is not None
            failures[wire.id] = (code[0], buffered.prelude["statusCode"])
            assert json.loads(buffered.streamed_body)["error"]["code"] == "rate_limited"
    emulator.assert_clean()
    assert seen["openai"] == seen["anthropic"] == seen["bedrock"]
    assert [e["chunk_type"] for e in seen["openai"]] == [
        "start", "tool_call", "tool_result", "metadata", "content", "content", "content", "done",
    ]  # fmt: skip
    done = seen["openai"][-1]
    assert (done["final_response"], done["usage"]) == (
        "2+3*4 = 14",
        {"input_tokens": 50, "output_tokens": 14},
    )
    assert failures == {wire.id: ("rate_limited", 429) for wire in WIRES}
