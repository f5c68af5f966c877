"""The one event vocabulary of a run. Wire formats (SSE JSON, ...) are encoders at the edge."""

from __future__ import annotations

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


@dataclass(frozen=True, slots=True)
class Done:
    status: DoneStatus
    final_response: str
    total_steps: int
    memories_updated: bool = False
    memories_count: int = 0
    usage: Usage = field(default_factory=Usage)
    metrics: dict[str, int | float | None] = field(default_factory=dict)


Event = Start | TextDelta | ToolCall | ToolResult | Metadata | Error | Done
