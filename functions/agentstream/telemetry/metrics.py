"""CloudWatch Embedded Metric Format: one JSON blob per finished run, written to stdout.

CloudWatch Logs turns the blob into metrics (no API call, no agent): the run's figures under the
dimensions ``service``, ``provider`` and ``status``; the counters ``Runs``, ``Errors``,
``Cancellations`` and ``Timeouts`` under ``service`` alone (sum them); ``Errors`` once more under
``service`` + ``error_code`` when the run failed. ``run_id``, ``agent_id``, ``tenant`` and the request
id ride along as plain properties (searchable in Logs Insights, never dimensions: they are unbounded).
A resumed stream (a replay of the run log) writes a blob of its own with ``Resumes``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentstream.core.events import Done
    from agentstream.core.telemetry import RunInfo

__all__ = ["replay_blob", "run_blob", "write_blob"]

# metric name, unit, key of Done.metrics
_RUN_FIGURES: tuple[tuple[str, str, str], ...] = (
    ("TimeToFirstToken", "Milliseconds", "ttft_ms"),
    ("RunDuration", "Milliseconds", "duration_ms"),
    ("OutputTokensPerSecond", "Count/Second", "output_tokens_per_s"),
    ("InterChunkGapP95", "Milliseconds", "gap_p95_ms"),
)


def _directive(namespace: str, dimensions: list[str], metrics: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "Namespace": namespace,
        "Dimensions": [dimensions],
        "Metrics": [{"Name": name, "Unit": unit} for name, unit in metrics],
    }


def run_blob(
    namespace: str,
    service: str,
    info: RunInfo,
    done: Done | None,
    *,
    tool_calls: int = 0,
    properties: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The blob of one finished run (``done`` None: its task was cancelled before it ended)."""
    status = done.status if done is not None else "cancelled"
    values: dict[str, float] = {}
    figures: list[tuple[str, str]] = []
    if done is not None:
        for name, unit, key in _RUN_FIGURES:
            value = done.metrics.get(key)
            if isinstance(value, int | float):  # a run with no text has no TimeToFirstToken
                values[name] = value
                figures.append((name, unit))
        values["InputTokens"] = done.usage.input_tokens
        values["OutputTokens"] = done.usage.output_tokens
        values["Steps"] = done.total_steps
        figures += [("InputTokens", "Count"), ("OutputTokens", "Count"), ("Steps", "Count")]
    values["ToolCalls"] = tool_calls
    figures.append(("ToolCalls", "Count"))
    counters = {
        "Runs": 1,
        "Errors": int(status == "error"),
        "Cancellations": int(status == "cancelled"),
        "Timeouts": int(status == "timeout"),
    }
    directives = [
        _directive(namespace, ["service", "provider", "status"], figures),
        _directive(namespace, ["service"], [(name, "Count") for name in counters]),
    ]
    blob: dict[str, Any] = {
        "_aws": {"Timestamp": int(time.time() * 1000), "CloudWatchMetrics": directives},
        "service": service,
        "provider": info.provider,
        "status": status,
        **values,
        **counters,
        "run_id": info.run_id,
        "agent_id": info.agent_id,
        "tenant": info.tenant,
        **(properties or {}),
    }
    if status == "error":
        blob["error_code"] = (done.error_code if done is not None else None) or "internal_error"
        directives.append(_directive(namespace, ["service", "error_code"], [("Errors", "Count")]))
    return blob


def replay_blob(
    namespace: str, service: str, run_id: str, properties: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The blob of one resumed stream."""
    return {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [_directive(namespace, ["service"], [("Resumes", "Count")])],
        },
        "service": service,
        "Resumes": 1,
        "run_id": run_id,
        **(properties or {}),
    }


def write_blob(blob: Mapping[str, Any]) -> None:
    """One line on stdout: CloudWatch Logs extracts the metrics (in Lambda, stdout is the log)."""
    sys.stdout.write(json.dumps(blob, separators=(",", ":"), ensure_ascii=False) + "\n")
    sys.stdout.flush()
