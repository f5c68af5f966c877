"""OpenTelemetry spans of runs, following the GenAI semantic conventions, sent over OTLP/HTTP.

Imported only when traces are on (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``): the SDK and its exporter take 150-200 ms to import. Per run:
``invoke_agent {agent name}``, one ``chat {model}`` per model call and one ``execute_tool {tool}`` per
tool call below it. The run's trace continues the invocation's X-Ray trace (``Root`` is the trace id,
``Parent`` the parent span) when Lambda gives one. Spans are batched; the end of every run flushes
them (in a thread, bounded), because Lambda freezes the environment once the invocation has answered.

The provider is this module's own, never the global one: nothing else in the process (FastAPI imports
the OpenTelemetry API) sends spans through it by accident.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

if TYPE_CHECKING:
    from opentelemetry.context import Context

    from agentstream.core.events import Done, ToolCall, ToolResult, Usage
    from agentstream.core.telemetry import RunInfo

__all__ = ["RunSpans", "Tracing", "xray_parent"]

# gen_ai.provider.name's well-known values, where ours differ
_PROVIDER_NAMES = {"bedrock": "aws.bedrock"}


def xray_parent(header: str | None) -> Context | None:
    """The context of an X-Ray trace header's parent segment (``Root=1-…;Parent=…;Sampled=…``)."""
    if not header:
        return None
    fields = dict(part.split("=", 1) for part in header.split(";") if "=" in part)
    root = fields.get("Root", "")
    parent = fields.get("Parent", "")
    match = re.fullmatch(r"1-([0-9a-fA-F]{8})-([0-9a-fA-F]{24})", root)
    if match is None or not re.fullmatch(r"[0-9a-fA-F]{16}", parent):
        return None
    trace_id = int(match.group(1) + match.group(2), 16)
    span_id = int(parent, 16)
    if not trace_id or not span_id:
        return None
    flags = TraceFlags(TraceFlags.SAMPLED if fields.get("Sampled") == "1" else TraceFlags.DEFAULT)
    context = SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)
    return trace.set_span_in_context(NonRecordingSpan(context))


class Tracing:
    """The process's tracer: its own provider, batching to the exporter (OTLP/HTTP by default)."""

    def __init__(
        self,
        service: str,
        *,
        exporter: SpanExporter | None = None,
        flush_ms: int = 2_000,
        content: bool = False,
    ) -> None:
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()  # endpoint, headers, timeout: the OTEL_EXPORTER_OTLP_* variables
        # Sampled unless the operator chose a sampler (OTEL_TRACES_SAMPLER): X-Ray's own sampling
        # decision (Sampled=0 when the function's active tracing is off) must not silence OTLP.
        sampler = None if os.environ.get("OTEL_TRACES_SAMPLER") else ALWAYS_ON
        self.provider = TracerProvider(
            sampler=sampler, resource=Resource.create({"service.name": service}), shutdown_on_exit=False
        )
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("agentstream")
        self.flush_ms = flush_ms
        self.content = content

    def run(self, info: RunInfo, parent: str | None) -> RunSpans:
        return RunSpans(self, info, xray_parent(parent))

    async def flush(self) -> None:
        """Export what is buffered, in a thread (the export is a blocking HTTP request), bounded."""
        if self.flush_ms > 0:
            await asyncio.to_thread(self.provider.force_flush, self.flush_ms)

    def shutdown(self) -> None:
        self.provider.shutdown()


class RunSpans:
    """The spans of one run: ``invoke_agent`` open for the whole run, one child open at a time."""

    def __init__(self, tracing: Tracing, info: RunInfo, parent: Context | None) -> None:
        self._tracing = tracing
        self._info = info
        self._provider = _PROVIDER_NAMES.get(info.provider, info.provider)
        tracer = tracing.tracer
        self._root = tracer.start_span(
            f"invoke_agent {info.agent_name}",
            context=parent,
            kind=SpanKind.INTERNAL,
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.id": info.agent_id,
                "gen_ai.agent.name": info.agent_name,
                "gen_ai.provider.name": self._provider,
                "gen_ai.request.model": info.model,
                "gen_ai.conversation.id": info.session_id,
                "agentstream.run_id": info.run_id,
                "agentstream.tenant": info.tenant,
            },
        )
        self._inside = trace.set_span_in_context(self._root)
        self._chat: trace.Span | None = None
        self._tool: trace.Span | None = None

    def chat_started(self, model: str) -> None:
        self._chat = self._tracing.tracer.start_span(
            f"chat {model}",
            context=self._inside,
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": self._provider,
                "gen_ai.request.model": model,
            },
        )

    def chat_ended(self, usage: Usage, finish_reasons: tuple[str, ...]) -> None:
        span, self._chat = self._chat, None
        if span is None:
            return
        span.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
        if finish_reasons:
            span.set_attribute("gen_ai.response.finish_reasons", list(finish_reasons))
        else:  # cut short: an upstream failure, the deadline or a stop
            span.set_attribute("error.type", "interrupted")
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    def tool_started(self, call: ToolCall) -> None:
        span = self._tracing.tracer.start_span(
            f"execute_tool {call.name}",
            context=self._inside,
            kind=SpanKind.INTERNAL,
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": call.name,
                "gen_ai.tool.call.id": call.id,
                "gen_ai.tool.type": "function",
            },
        )
        if self._tracing.content:
            import json

            span.set_attribute("gen_ai.tool.call.arguments", json.dumps(call.arguments, ensure_ascii=False))
        self._tool = span

    def tool_ended(self, result: ToolResult | None) -> None:
        span, self._tool = self._tool, None
        if span is None:
            return
        if result is None:
            span.set_attribute("error.type", "interrupted")
        elif result.is_error:
            span.set_attribute("error.type", "tool_error")
            span.set_status(Status(StatusCode.ERROR))
        elif self._tracing.content:
            span.set_attribute("gen_ai.tool.call.result", result.content)
        span.end()

    def ended(self, done: Done | None) -> None:
        """Close what a cut-short run left open, then the run's span."""
        status = done.status if done is not None else "cancelled"
        for span in (self._chat, self._tool):
            if span is not None:
                span.set_attribute("error.type", status)
                span.end()
        self._chat = self._tool = None
        root = self._root
        root.set_attribute("agentstream.status", status)
        if done is not None:
            root.set_attribute("gen_ai.usage.input_tokens", done.usage.input_tokens)
            root.set_attribute("gen_ai.usage.output_tokens", done.usage.output_tokens)
        if status == "error":
            code = (done.error_code if done is not None else None) or "internal_error"
            root.set_attribute("error.type", code)
            root.set_status(Status(StatusCode.ERROR, code))
        elif status == "timeout":
            root.set_attribute("error.type", "timeout")
            root.set_status(Status(StatusCode.ERROR, "timeout"))
        root.end()
