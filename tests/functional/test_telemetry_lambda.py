"""A streamed run with a tool call through the Lambda path (streaming-runtime layer -> stream handler ->
app), and through uvicorn: what it leaves in the logs, in the metrics and, with an OTLP endpoint, as a
trace, tells its whole story."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

from agentstream.core.agents import AgentSpec, ModelConfig
from agentstream.store import Store, create_table
from tests.conftest import ADMIN_KEY
from tests.fakes.openai_upstream import FakeOpenAI, Reply
from tests.functional.runtime_api_emulator import RuntimeApiEmulator
from tests.functional.test_lambda_app import _chat_event, _events
from tests.functional.test_streaming_runtime import answer, runtime
from tests.support.emf import emf_blobs, validate
from tests.support.otlp_receiver import OtlpReceiver, otlp_receiver
from tests.support.server import free_port, parse_sse

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
XRAY_ROOT = "5759e988bd862e3fe1be46a994272793"  # the emulator's Lambda-Runtime-Trace-Id
XRAY_PARENT = "53995c3f42cd8ad8"
MESSAGE = "my secret is swordfish; what is 2+3*4?"
REPLY = ("2+3*4 ", "is ", "14.")
REQUIRED = {"level", "location", "message", "timestamp", "service"}


@pytest.fixture
def moto_endpoint() -> Iterator[str]:
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{port}"
    create_table("agentstream", boto3.client("dynamodb", endpoint_url=endpoint))
    try:
        yield endpoint
    finally:
        moto.stop()


def _script(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(
        Reply()
        .tool_call(0, id="call_1", name="calculator", arguments='{"expression": "2+3*4"}')
        .finish("tool_calls")
        .usage(30, 8)
        .done(),
        Reply.chat(*REPLY, usage=(45, 6), pause=0.05),
    )


async def _agent(endpoint: str) -> str:
    store = Store("agentstream", boto3.client("dynamodb", endpoint_url=endpoint))
    spec = AgentSpec(name="tel", model=ModelConfig(provider="openai", name="m"), tools=["calculator"])
    return (await store.agents.create("default", spec)).id


def _check_story(
    output: str, run_id: str, receiver: OtlpReceiver, *, request_id: str | None
) -> list[dict[str, Any]]:
    """The logs, the one EMF blob and the trace of run ``run_id``, checked; the log lines returned."""
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    blobs = [b for b in emf_blobs(output.splitlines()) if b.get("run_id") == run_id]
    assert len(blobs) == 1, blobs
    (blob,) = blobs
    validate(blob)
    assert (blob["status"], blob["provider"], blob["Steps"], blob["ToolCalls"]) == (
        "completed",
        "openai",
        2,
        1,
    )
    assert (blob["InputTokens"], blob["OutputTokens"]) == (75, 14)
    assert blob["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "agentstream-test"
    logs = [x for x in lines if "_aws" not in x]
    about_run = [x for x in logs if x.get("run_id") == run_id]
    ours = [x for x in about_run if x["logger"] == "agentstream.runs"]
    assert [x["message"] for x in ours] == ["run started", "tool called", "run finished"]
    for line in about_run:
        assert line.keys() >= REQUIRED
        assert (line["agent_id"], line["tenant"]) == (blob["agent_id"], "default")
        if request_id is not None:
            assert line["function_request_id"] == request_id
    summary = ours[-1]
    assert summary["status"] == "completed"
    assert (summary["steps"], summary["tool_calls"], summary["output_tokens"]) == (2, 1, 14)
    assert summary["ttft_ms"] >= 0
    assert summary["duration_ms"] >= summary["ttft_ms"]
    # never a key, never the user's or the model's words
    assert ADMIN_KEY not in output
    assert "swordfish" not in output
    assert "is 14." not in output
    # the trace, already at the receiver when the response ended
    spans = [s for s in receiver.spans if s.trace_id == XRAY_ROOT or request_id is None]
    names = sorted(s.name for s in spans)
    assert names == ["chat m", "chat m", "execute_tool calculator", "invoke_agent tel"]
    root = next(s for s in spans if s.name == "invoke_agent tel")
    assert root.attributes["agentstream.run_id"] == run_id
    assert all(s.parent_span_id == root.span_id for s in spans if s is not root)
    chats = [s for s in spans if s.name == "chat m"]
    assert sorted(tuple(s.attributes["gen_ai.response.finish_reasons"]) for s in chats) == [
        ("stop",),
        ("tool_calls",),
    ]
    assert sorted(s.attributes["gen_ai.usage.output_tokens"] for s in chats) == [6, 8]
    assert {s.attributes["gen_ai.provider.name"] for s in chats} == {"openai"}
    return logs


async def test_a_streamed_run_through_the_lambda_runtime_tells_its_story(
    tmp_path: Path, fake_openai: FakeOpenAI, moto_endpoint: str
) -> None:
    _script(fake_openai)
    agent = await _agent(moto_endpoint)
    with otlp_receiver() as receiver:
        env = {
            "AWS_ENDPOINT_URL_DYNAMODB": moto_endpoint,
            "AGENTSTREAM_ADMIN_KEY": ADMIN_KEY,
            "OPENAI_BASE_URL": fake_openai.base_url,
            "AGENTSTREAM_METRICS_NAMESPACE": "agentstream-test",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        }
        async with (
            RuntimeApiEmulator() as emulator,
            runtime(emulator, tmp_path, handler="agentstream.handlers.stream.handler", env=env) as running,
        ):
            result = await answer(emulator.invoke(_chat_event(agent, MESSAGE)))
            spans_at_end = len(receiver.spans)
        emulator.assert_clean()
        events = _events(result)
        assert [e["chunk_type"] for _, e in events][-1] == "done"
        done = events[-1][1]
        assert done["status"] == "completed"
        assert {"gap_p50_ms", "gap_p95_ms"} <= done["metrics"].keys()
        run_id = events[0][1]["run_id"]
        # flushed before the invocation ended: Lambda may freeze the environment right after
        assert spans_at_end == 4
        output = running.output
        logs = _check_story(output, run_id, receiver, request_id=result.request_id)
    # in Lambda every line is JSON, the runtime's and the app's alike
    assert all(line.startswith("{") for line in output.splitlines() if line.strip()), output
    assert all(x.keys() >= REQUIRED for x in logs)


def _spawn_uvicorn(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    # the test process's AWS settings (region, fake credentials) reach the same moto tables
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("AGENTSTREAM_", "OPENAI_", "OTEL_"))
    }
    environment.update(env)
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "functions"), str(ROOT), environment.get("PYTHONPATH", "")]
    )
    environment["PYTHONUNBUFFERED"] = "1"
    command = [sys.executable, "-m", "uvicorn", "agentstream.app:app", "--port", str(port)]
    command += ["--log-level", "warning", "--no-access-log"]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=sink, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, log.read_text()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process, base
        except OSError:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)


async def test_a_streamed_run_through_uvicorn_tells_the_same_story(
    tmp_path: Path, fake_openai: FakeOpenAI, moto_endpoint: str
) -> None:
    _script(fake_openai)
    agent = await _agent(moto_endpoint)
    log = tmp_path / "uvicorn.log"
    with otlp_receiver() as receiver:
        env = {
            "AWS_ENDPOINT_URL_DYNAMODB": moto_endpoint,
            "AGENTSTREAM_ADMIN_KEY": ADMIN_KEY,
            "OPENAI_BASE_URL": fake_openai.base_url,
            "AGENTSTREAM_METRICS_NAMESPACE": "agentstream-test",
            "AGENTSTREAM_LOG_FORMAT": "json",
            "AGENTSTREAM_METRICS": "true",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        }
        process, base = _spawn_uvicorn(env, log)
        try:
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                response = await client.post(
                    f"/api/v1/agents/{agent}/chat/stream",
                    json={"message": MESSAGE, "user_id": "u"},
                    headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                )
            spans_at_end = len(receiver.spans)
        finally:
            process.terminate()
            process.wait(10)
        assert response.status_code == 200, (response.text, log.read_text())
        events = parse_sse(response.content)
        assert events[-1][1]["status"] == "completed"
        assert spans_at_end == 4
        _check_story(log.read_text(), events[0][1]["run_id"], receiver, request_id=None)


async def test_a_resumed_stream_is_counted_and_logged(
    dynamodb: Any, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    from agentstream.config import Settings
    from agentstream.web.app import create_app

    settings = Settings(admin_key=ADMIN_KEY, metrics_enabled=True, log_flush_seconds=0.05)
    app = create_app(settings, Store("agentstream", dynamodb))
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=auth) as client:
        spec = {"name": "s", "model": {"provider": "scripted", "name": "s", "options": {"delay_ms": 0}}}
        agent = (await client.post("/api/v1/agents", json=spec)).json()["data"]["id"]
        ran = await client.post(f"/api/v1/agents/{agent}/chat", json={"message": "hi"})
        run_id = ran.json()["data"]["run_id"]
        capsys.readouterr()
        with caplog.at_level(logging.INFO, logger="agentstream.runs"):
            replayed = await client.get(f"/api/v1/runs/{run_id}/events")
    assert parse_sse(replayed.content)[-1][1]["chunk_type"] == "done"
    (blob,) = emf_blobs(capsys.readouterr().out.splitlines())
    validate(blob)
    assert (blob["Resumes"], blob["run_id"]) == (1, run_id)
    assert [r.getMessage() for r in caplog.records if r.name == "agentstream.runs"] == ["run resumed"]
