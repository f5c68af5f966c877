"""Logs, metrics and traces of runs: the adapter behind the core's hook (``core/telemetry.py``).

``build_telemetry(settings)`` gives the ``Telemetry`` the chat service calls. Per run it labels the
run's log lines (``run_id``, ``agent_id``, ``tenant``), writes a start line and one summary line, one
CloudWatch EMF blob (``metrics.py``) and, only when an OTLP endpoint is configured, GenAI spans
(``traces.py``, imported then and only then). See docs/operating.md.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from agentstream.core.telemetry import RunInfo, RunObserver, Telemetry
from agentstream.telemetry import logs, metrics
from agentstream.telemetry.logs import configure_logging

if TYPE_CHECKING:
    from agentstream.config import Settings
    from agentstream.core.events import Done, ToolCall, ToolResult, Usage
    from agentstream.telemetry.traces import RunSpans, Tracing

__all__ = ["AppTelemetry", "build_telemetry", "configure_logging"]

logger = logging.getLogger("agentstream.runs")


def build_telemetry(settings: Settings) -> AppTelemetry:
    tracing = None
    if settings.traces_enabled:
        from agentstream.telemetry.traces import Tracing

        tracing = Tracing(
            settings.service_name, flush_ms=settings.trace_flush_ms, content=settings.log_content
        )
    return AppTelemetry(settings, tracing)


class AppTelemetry(Telemetry):
    """The process's telemetry (stateless between runs: each run's state is its ``_RunTelemetry``)."""

    def __init__(self, settings: Settings, tracing: Tracing | None = None) -> None:
        self.settings = settings
        self.tracing = tracing

    def run_started(self, info: RunInfo) -> RunObserver:
        return _RunTelemetry(self, info)

    def replay_started(self, tenant: str, run_id: str) -> None:
        logger.info("run resumed", extra={"run_id": run_id, "tenant": tenant})
        if self.settings.emits_metrics:
            settings = self.settings
            metrics.write_blob(
                metrics.replay_blob(settings.metrics_namespace, settings.service_name, run_id, _request())
            )


def _request() -> dict[str, str]:
    rid = logs.request_id()
    return {"function_request_id": rid} if rid else {}


class _RunTelemetry(RunObserver):
    """One run: its log context, counts for the summary, its spans."""

    def __init__(self, app: AppTelemetry, info: RunInfo) -> None:
        self._app = app
        self._info = info
        self._tool_calls = 0
        logs.bind_run(info.run_id, info.agent_id, info.tenant)
        self._spans: RunSpans | None = None
        if app.tracing is not None:
            self._spans = app.tracing.run(info, logs.xray_trace_id())
        logger.info(
            "run started",
            extra={"provider": info.provider, "model": info.model, "session_id": info.session_id},
        )

    def model_call_started(self, step: int, model: str) -> None:
        if self._spans is not None:
            self._spans.chat_started(model)

    def model_call_ended(self, usage: Usage, finish_reasons: tuple[str, ...]) -> None:
        if self._spans is not None:
            self._spans.chat_ended(usage, finish_reasons)

    def tool_started(self, call: ToolCall) -> None:
        self._tool_calls += 1
        if self._spans is not None:
            self._spans.tool_started(call)

    def tool_ended(self, call: ToolCall, result: ToolResult | None) -> None:
        if self._spans is not None:
            self._spans.tool_ended(result)
        extra: dict[str, Any] = {"tool": call.name, "tool_call_id": call.id}
        if result is not None:
            extra["is_error"] = result.is_error
        if self._app.settings.log_content:
            extra["arguments"] = call.arguments
        logger.info("tool called", extra=extra)

    def run_ended(self, done: Done | None) -> None:
        settings = self._app.settings
        info = self._info
        if self._spans is not None:
            self._spans.ended(done)
        summary: dict[str, Any] = {
            "status": done.status if done is not None else "cancelled",
            "provider": info.provider,
            "model": info.model,
            "steps": done.total_steps if done is not None else 0,
            "tool_calls": self._tool_calls,
        }
        if done is not None:
            summary.update(done.metrics)
            summary["input_tokens"] = done.usage.input_tokens
            summary["output_tokens"] = done.usage.output_tokens
            if done.usage.estimated:
                summary["tokens_estimated"] = True
            if done.error_code:
                summary["error_code"] = done.error_code
            if settings.log_content:
                summary["final_response"] = done.final_response
        logger.info("run finished", extra=summary)
        if settings.emits_metrics:
            blob = metrics.run_blob(
                settings.metrics_namespace,
                settings.service_name,
                info,
                done,
                tool_calls=self._tool_calls,
                properties=_request(),
            )
            metrics.write_blob(blob)

    async def flush(self) -> None:
        if self._app.tracing is not None:
            await self._app.tracing.flush()
