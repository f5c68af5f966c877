"""Spans of a run: GenAI names and attributes, the X-Ray parent, flushed before the run's end, and
OpenTelemetry's SDK left unimported when no endpoint is set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from agentstream.config import Settings
from agentstream.core.agents import Agent, ModelConfig
from agentstream.core.service import ChatInput, ChatService
from agentstream.telemetry import AppTelemetry, build_telemetry
from agentstream.telemetry.traces import Tracing, xray_parent
from tests.support.memory_store import MemoryStore
from tests.support.otlp_receiver import otlp_receiver

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[3]
XRAY = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
TRACE_ID = "5759e988bd862e3fe1be46a994272793"


def _settings(**values: Any) -> Settings:
    return Settings(log_flush_seconds=0.05, heartbeat_seconds=0.05, **values)


def _store(**options: Any) -> MemoryStore:
    store = MemoryStore()
    model = ModelConfig(provider="scripted", name="tiny-model", options={"delay_ms": 1, **options})
    store.agents.items[("t", "agt_1")] = Agent(
        id="agt_1", name="calc", model=model, tools=["calculator"], created_at="", updated_at=""
    )
    return store


async def _run(chat: ChatService, message: str = "what is 2+3*4") -> str:
    run = await chat.start("t", "agt_1", ChatInput(message, user_id="u", session_id="s1"))
    async for _ in run.events():
        pass
    await run.wait()
    return run.run_id


def _by_name(spans: Any) -> dict[str, Any]:
    return {s.name: s for s in spans}


async def test_a_run_with_a_tool_call_is_one_genai_trace_under_the_xray_parent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("_X_AMZN_TRACE_ID", XRAY)
    exporter = InMemorySpanExporter()
    settings = _settings()
    chat = ChatService(
        _store(), settings, telemetry=AppTelemetry(settings, Tracing("svc", exporter=exporter))
    )
    run_id = await _run(chat)
    # flushed by the end of the run (the batch processor alone would wait 5 s)
    spans: tuple[ReadableSpan, ...] = exporter.get_finished_spans()
    assert sorted(s.name for s in spans) == [
        "chat tiny-model",
        "chat tiny-model",
        "execute_tool calculator",
        "invoke_agent calc",
    ]
    root = _by_name(spans)["invoke_agent calc"]
    assert root.context is not None
    assert root.parent is not None
    assert f"{root.context.trace_id:032x}" == TRACE_ID
    assert f"{root.parent.span_id:016x}" == "53995c3f42cd8ad8"
    assert root.attributes is not None
    assert root.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert root.attributes["gen_ai.agent.name"] == "calc"
    assert root.attributes["agentstream.run_id"] == run_id
    assert root.attributes["agentstream.status"] == "completed"
    assert root.resource.attributes["service.name"] == "svc"
    chats = [s for s in spans if s.name.startswith("chat ")]
    for span in (*chats, _by_name(spans)["execute_tool calculator"]):
        assert span.parent is not None
        assert span.parent.span_id == root.context.span_id
        assert span.context is not None
        assert span.context.trace_id == root.context.trace_id
    first, second = sorted(chats, key=lambda s: s.start_time or 0)
    for span in (first, second):
        assert span.kind is SpanKind.CLIENT
        assert span.attributes is not None
        assert span.attributes["gen_ai.operation.name"] == "chat"
        assert span.attributes["gen_ai.provider.name"] == "scripted"
        assert span.attributes["gen_ai.request.model"] == "tiny-model"
        assert span.attributes["gen_ai.usage.input_tokens"] > 0
    assert first.attributes is not None
    assert second.attributes is not None
    assert tuple(first.attributes["gen_ai.response.finish_reasons"]) == ("tool_calls",)
    assert tuple(second.attributes["gen_ai.response.finish_reasons"]) == ("stop",)
    assert second.attributes["gen_ai.usage.output_tokens"] > 0
    tool = _by_name(spans)["execute_tool calculator"]
    assert tool.attributes is not None
    assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
    assert tool.attributes["gen_ai.tool.name"] == "calculator"
    # the tool ran between the two model calls
    assert (first.end_time or 0) <= (tool.start_time or 0) <= (tool.end_time or 0) <= (second.start_time or 0)
    # no message text, no arguments (AGENTSTREAM_LOG_CONTENT is off)
    assert "2+3*4" not in json.dumps([dict(s.attributes or {}) for s in spans], default=str)


async def test_a_failed_run_marks_its_spans_as_errors() -> None:
    exporter = InMemorySpanExporter()
    settings = _settings()
    chat = ChatService(
        _store(fail_after=1), settings, telemetry=AppTelemetry(settings, Tracing("svc", exporter=exporter))
    )
    await _run(chat, "hello")
    spans = _by_name(exporter.get_finished_spans())
    root = spans["invoke_agent calc"]
    assert root.status.status_code is StatusCode.ERROR
    assert root.attributes["error.type"] == "upstream_error"
    call = spans["chat tiny-model"]
    assert call.status.status_code is StatusCode.ERROR
    assert "gen_ai.response.finish_reasons" not in call.attributes


def test_xray_headers_without_a_usable_parent_start_a_new_trace() -> None:
    assert xray_parent(None) is None
    assert xray_parent("Root=1-5759e988-bd862e3fe1be46a994272793") is None  # no Parent
    assert xray_parent("Root=garbage;Parent=53995c3f42cd8ad8") is None
    assert xray_parent(XRAY) is not None


async def test_spans_reach_a_real_otlp_http_receiver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_X_AMZN_TRACE_ID", XRAY)
    with otlp_receiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
        settings = _settings(service_name="agentstream-test")
        assert settings.traces_enabled
        telemetry = build_telemetry(settings)
        assert telemetry.tracing is not None
        try:
            await _run(ChatService(_store(), settings, telemetry=telemetry))
            # sent before the run ended: nothing waited for the batch processor's schedule
            spans = list(receiver.spans)
        finally:
            telemetry.tracing.shutdown()
    names = sorted(s.name for s in spans)
    assert names == ["chat tiny-model", "chat tiny-model", "execute_tool calculator", "invoke_agent calc"]
    assert {s.trace_id for s in spans} == {TRACE_ID}
    assert {s.service for s in spans} == {"agentstream-test"}
    root = next(s for s in spans if s.name == "invoke_agent calc")
    assert root.parent_span_id == "53995c3f42cd8ad8"
    assert all(s.parent_span_id == root.span_id for s in spans if s is not root)
    chat = next(s for s in spans if s.name == "chat tiny-model")
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.request.model"] == "tiny-model"
    assert chat.attributes["gen_ai.provider.name"] == "scripted"
    assert {
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "gen_ai.response.finish_reasons",
    } <= set(chat.attributes)


IMPORTS = """
import json, sys
import agentstream.app
from agentstream.telemetry import build_telemetry
from agentstream.config import get_settings
build_telemetry(get_settings())
heavy = ("opentelemetry.sdk", "opentelemetry.exporter", "google.protobuf")
print(json.dumps(sorted(m for m in sys.modules if m.startswith(heavy))))
"""


def _imported(env: dict[str, str]) -> list[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AGENTSTREAM_", "OTEL_"))}
    environment.update({"AWS_REGION": "us-east-1", **env})
    environment["PYTHONPATH"] = os.pathsep.join([str(ROOT / "functions"), str(ROOT)])
    done = subprocess.run(
        [sys.executable, "-c", IMPORTS],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=True,
    )
    result: list[str] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_without_an_endpoint_nothing_of_the_opentelemetry_sdk_is_imported() -> None:
    assert _imported({}) == []
    # the same check sees them when traces are on (so it would notice an eager import)
    on = _imported({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    assert "opentelemetry.sdk.trace" in on
    assert "opentelemetry.exporter.otlp.proto.http.trace_exporter" in on
