"""What the core tells about a run as it goes: the hook that logs, metrics and traces hang on.

The core calls a ``RunObserver`` at the run's landmarks (start, each model call, each tool call, the
end) and knows nothing of what listens: the adapter (``agentstream.telemetry``) writes JSON logs, one
CloudWatch EMF blob per run and OpenTelemetry spans. Nothing is called per streamed text delta: the
agent loop only keeps the gaps between deltas for ``Done.metrics``. The default does nothing.

One observer per run (``Telemetry.run_started``), so per-run state (its spans, its log context) never
lives in a process global: one process serves many runs at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from agentstream.core.events import Done, ToolCall, ToolResult, Usage

__all__ = ["NO_OBSERVER", "NO_TELEMETRY", "RunInfo", "RunObserver", "Telemetry"]


@dataclass(frozen=True, slots=True)
class RunInfo:
    """Who and what a run is: the low-cardinality facts telemetry labels it with (no message text)."""

    run_id: str
    tenant: str
    agent_id: str
    agent_name: str
    provider: str
    model: str
    session_id: str = ""


class RunObserver(Protocol):
    """The landmarks of one run. Called from the run's own task; each call must be cheap and never raise."""

    def model_call_started(self, step: int, model: str) -> None: ...

    def model_call_ended(self, usage: Usage, finish_reasons: tuple[str, ...]) -> None:
        """``finish_reasons`` empty: the call was cut short (error, timeout, cancel)."""

    def tool_started(self, call: ToolCall) -> None: ...

    def tool_ended(self, call: ToolCall, result: ToolResult | None) -> None:
        """``result`` None: the tool was interrupted (deadline, cancel)."""

    def run_ended(self, done: Done | None) -> None:
        """Right after ``Done`` went to the reader; ``None`` when the run's task was cancelled outright."""

    async def flush(self) -> None:
        """Send what the run left buffered (traces) before the invocation ends; bounded in time."""


class Telemetry(Protocol):
    """The process's telemetry: an observer per run, and counters about no particular run."""

    def run_started(self, info: RunInfo) -> RunObserver: ...

    def replay_started(self, tenant: str, run_id: str) -> None:
        """A client resumed a run's stream from the run log."""


class _NoObserver:
    def model_call_started(self, step: int, model: str) -> None:
        return None

    def model_call_ended(self, usage: Usage, finish_reasons: tuple[str, ...]) -> None:
        return None

    def tool_started(self, call: ToolCall) -> None:
        return None

    def tool_ended(self, call: ToolCall, result: ToolResult | None) -> None:
        return None

    def run_ended(self, done: Done | None) -> None:
        return None

    async def flush(self) -> None:
        return None


class _NoTelemetry:
    def run_started(self, info: RunInfo) -> RunObserver:
        return NO_OBSERVER

    def replay_started(self, tenant: str, run_id: str) -> None:
        return None


NO_OBSERVER: RunObserver = _NoObserver()
NO_TELEMETRY: Telemetry = _NoTelemetry()
