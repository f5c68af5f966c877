"""The one event vocabulary of a run. Wire formats (SSE JSON, ...) are encoders at the edge."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "Done",
    "DoneStatus",
    "Error",
    "Event",
    "Metadata",
    "Start",
    "TextDelta",
    "ToolCall",
    "ToolResult",
    "Usage",
    "event_json",
    "event_to_dict",
]

DoneStatus = Literal["completed", "error", "cancelled", "timeout"]


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    # True when some of the counts were estimated because the upstream reported none
    estimated: bool = False

    def add(self, other: Usage) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.estimated = self.estimated or other.estimated

    def to_dict(self) -> dict[str, int | bool]:
        data: dict[str, int | bool] = {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}
        if self.estimated:
            data["estimated"] = True
        return data


@dataclass(frozen=True, slots=True)
class Start:
    run_id: str
    agent_id: str
    session_id: str
    message: str = "Agent started"


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolResult:
    id: str
    name: str
    content: str
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class Metadata:
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Error:
    message: str
    code: str
    # seconds the provider asked to wait (rate_limited), when it said; for HTTP answers, not the stream
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Done:
    status: DoneStatus
    final_response: str
    total_steps: int
    memories_updated: bool = False
    memories_count: int = 0
    usage: Usage = field(default_factory=Usage)
    metrics: dict[str, int | float | None] = field(default_factory=dict)
    # calls of the caller's own tools (``Turn.client_tools``) the model asked for: the run ended to let
    # the caller run them and send their results in its next turn
    pending_tool_calls: tuple[ToolCall, ...] = ()
    # the code of the ``Error`` event that ended the run (status ``error``): for telemetry, not the wire
    error_code: str | None = None


Event = Start | TextDelta | ToolCall | ToolResult | Metadata | Error | Done


def event_to_dict(event: Event) -> dict[str, Any]:
    """The canonical JSON object of an event: the seed's ``chunk_type`` vocabulary plus ``tool_result``.

    SSE frames it; the run log stores it, so a replay sends exactly what the live stream sent.
    """
    match event:
        case TextDelta(text=text):
            return {"chunk_type": "content", "content": text}
        case Start():
            return {
                "chunk_type": "start",
                "message": event.message,
                "run_id": event.run_id,
                "agent_id": event.agent_id,
                "session_id": event.session_id,
            }
        case ToolCall():
            return {"chunk_type": "tool_call", **_tool_call(event)}
        case ToolResult():
            return {
                "chunk_type": "tool_result",
                "tool_call_id": event.id,
                "tool_name": event.name,
                "content": event.content,
                "is_error": event.is_error,
            }
        case Metadata(data=data):
            return {"chunk_type": "metadata", "data": data}
        case Error():
            return {"chunk_type": "error", "content": event.message, "code": event.code}
        case Done():
            done: dict[str, Any] = {
                "chunk_type": "done",
                "status": event.status,
                "final_response": event.final_response,
                "total_steps": event.total_steps,
                "memories_updated": event.memories_updated,
                "memories_count": event.memories_count,
                "usage": event.usage.to_dict(),
                "metrics": event.metrics,
            }
            if event.pending_tool_calls:
                done["pending_tool_calls"] = [_tool_call(c) for c in event.pending_tool_calls]
            return done
    raise TypeError(f"not an event: {event!r}")


def _tool_call(event: ToolCall) -> dict[str, Any]:
    return {
        "tool_call_id": event.id,
        "tool_name": event.name,
        "arguments": event.arguments,
    }


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def event_json(event: Event) -> str:
    """``event_to_dict(event)`` as compact JSON (UTF-8 text kept as is), made once per event: the
    stream and the run log share it. Text deltas, nearly every event of a run, take a short path."""
    if type(event) is TextDelta:
        return '{"chunk_type":"content","content":' + _dumps(event.text) + "}"
    return _dumps(event_to_dict(event))
