"""Request bodies of the HTTP API (validation and the 422 messages live here, not in the core), and the
shapes of its answers, for the OpenAPI document.

The answer models describe what the routes return; the routes still build their dicts themselves
(``response_model=None``), so the wire format stays exactly what it was, and the fuzz tests
(tests/security/) check every answer against these schemas.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentstream.core.agents import Agent
from agentstream.core.ids import NAME_PATTERN
from agentstream.core.service import ChatInput
from agentstream.web.sse import MEDIA_TYPE

__all__ = [
    "CHUNK",
    "AgentList",
    "AgentOut",
    "CancelOut",
    "ChatCompletionOut",
    "ChatFailure",
    "ChatOut",
    "ChatRequest",
    "ErrorBody",
    "Health",
    "KeyCreatedOut",
    "KeyList",
    "MemoryList",
    "MemoryOut",
    "MessageList",
    "ModelList",
    "OpenAIErrorBody",
    "RunOut",
    "SessionList",
    "StreamOptions",
    "errors",
    "openai_errors",
    "sse",
    "sse_event",
    "stream_errors",
]

_NAME = NAME_PATTERN.pattern


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chunk_size: int | None = Field(
        None,
        ge=0,
        le=10_000,
        description="max characters per content event; 0 = each model delta as it comes",
    )
    on_disconnect: Literal["cancel", "continue"] = "cancel"


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(..., min_length=1)
    user_id: str = Field("anonymous", pattern=_NAME)
    session_id: str | None = Field(None, pattern=_NAME)
    stream_options: StreamOptions = Field(default_factory=StreamOptions)

    def to_input(self) -> ChatInput:
        return ChatInput(
            message=self.message,
            user_id=self.user_id,
            session_id=self.session_id,
            chunk_size=self.stream_options.chunk_size,
        )


# --- answers (documentation of the wire format; see the module docstring) ------------------------


class ErrorDetail(BaseModel):
    code: str = Field(..., description="stable, machine-readable")
    message: str = Field(..., description="for people")


class ErrorBody(BaseModel):
    """Every error outside ``/v1/``."""

    error: ErrorDetail


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIErrorBody(BaseModel):
    """Every error on the OpenAI-compatible routes (``/v1/``), in OpenAI's shape."""

    error: OpenAIErrorDetail


class Health(BaseModel):
    status: Literal["ok"]


class AgentOut(BaseModel):
    data: Agent


class AgentList(BaseModel):
    data: list[Agent]
    next_cursor: str | None


class ChatResult(BaseModel):
    run_id: str
    session_id: str
    status: Literal["completed", "error", "cancelled", "timeout"]
    content: str = Field(..., description="the whole answer: every content event, joined")
    total_steps: int
    memories_updated: bool
    memories_count: int
    usage: dict[str, int | bool]
    metrics: dict[str, int | float | None]
    tool_events: list[dict[str, Any]] = Field(..., description="tool_call and tool_result events, in order")


class ChatOut(BaseModel):
    data: ChatResult


class ChatFailure(BaseModel):
    """A run that ended with an error: the error, and what the run produced until then."""

    error: ErrorDetail
    data: ChatResult


class Session(BaseModel):
    session_id: str
    message_count: int
    created_at: str
    updated_at: str


class SessionList(BaseModel):
    data: list[Session]
    next_cursor: str | None


class StoredMessage(BaseModel):
    role: Literal["user", "assistant"]
    content: str
    run_id: str
    created_at: str


class MessageList(BaseModel):
    data: list[StoredMessage]
    next_cursor: str | None


class Memory(BaseModel):
    id: str
    content: str
    created_at: str
    expires_at: int | None = Field(..., description="epoch seconds, when it is forgotten")


class MemoryOut(BaseModel):
    data: Memory


class MemoryList(BaseModel):
    data: list[Memory]


class Key(BaseModel):
    id: str = Field(..., description="the key's id: safe to show and log")
    tenant: str
    name: str
    created_at: str


class KeyCreated(Key):
    key: str = Field(..., description="the key itself: shown this once only")


class KeyCreatedOut(BaseModel):
    data: KeyCreated


class KeyList(BaseModel):
    data: list[Key]
    next_cursor: str | None


class Run(BaseModel):
    run_id: str
    agent_id: str
    session_id: str
    user_id: str
    status: Literal["running", "completed", "error", "cancelled", "timeout"]
    created_at: str
    updated_at: str
    ended_at: str | None
    deadline_at: str | None
    events: int = Field(..., description="events in the run's log (0 while it runs)")
    log_complete: bool
    cancel_requested: bool
    usage: dict[str, Any]
    metrics: dict[str, Any]


class RunOut(BaseModel):
    data: Run


class Cancelling(BaseModel):
    run_id: str
    status: Literal["cancelling"]


class CancelOut(BaseModel):
    data: Cancelling


class ModelEntry(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelEntry]


class CompletionFunction(BaseModel):
    name: str
    arguments: str = Field(..., description="JSON text")


class CompletionToolCall(BaseModel):
    id: str
    type: Literal["function"]
    function: CompletionFunction


class CompletionMessage(BaseModel):
    role: Literal["assistant"]
    content: str | None
    refusal: None
    tool_calls: list[CompletionToolCall] | None = None


class CompletionChoice(BaseModel):
    index: int
    message: CompletionMessage
    logprobs: None
    finish_reason: Literal["stop", "tool_calls"]


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletionOut(BaseModel):
    """OpenAI's ``chat.completion`` (``stream: false``)."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    system_fingerprint: None
    choices: list[CompletionChoice]
    usage: CompletionUsage


_WHY = {
    400: "the body cannot be read (not UTF-8 JSON), or the conversation does not fit the model's context",
    401: "no key, or not a valid one",
    403: "the admin key is needed",
    404: "not found (or not the caller's)",
    409: "conflict with the record's current state",
    413: "the request body is too large",
    422: "the request is invalid (the message names the field)",
    429: "too many runs, or the model provider throttled",
    502: "the model provider failed",
    503: "the data store or Secrets Manager is unavailable; try again",
    504: "the model provider timed out",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries: these error statuses, in the contract's error shape."""
    return {s: {"model": ErrorBody, "description": _WHY[s]} for s in statuses}


def stream_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``errors()`` for a route whose ``response_class`` streams: the error bodies are still JSON.

    (FastAPI would file a ``model`` under the route's own media type, ``text/event-stream``.)
    """
    ref = {"$ref": f"#/components/schemas/{ErrorBody.__name__}"}
    return {s: {"description": _WHY[s], "content": {"application/json": {"schema": ref}}} for s in statuses}


def openai_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries: these error statuses, in OpenAI's error shape (``/v1/`` routes)."""
    return {s: {"model": OpenAIErrorBody, "description": _WHY[s]} for s in statuses}


# One event of the ``chunk_type`` streams: its ``data`` is a JSON object naming its kind (CONTRACT.md).
CHUNK = {
    "type": "object",
    "required": ["chunk_type"],
    "properties": {
        "chunk_type": {"enum": ["start", "content", "tool_call", "tool_result", "metadata", "error", "done"]}
    },
}


def sse_event(data: dict[str, Any] | None = None) -> dict[str, Any]:
    """The schema of one Server-Sent Event's fields (as OpenAPI before 3.2 describes a stream), with
    ``data`` (when given) the schema of each event's ``data`` read as JSON."""
    data_field: dict[str, Any] = {"type": "string"}
    if data is not None:
        data_field.update(contentMediaType="application/json", contentSchema=data)
    return {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "event": {"type": "string"},
            "retry": {"type": "integer"},
            "data": data_field,
        },
    }


def sse(description: str, data: dict[str, Any] | None = None) -> dict[int | str, dict[str, Any]]:
    """The 200 of a route that answers Server-Sent Events (see ``sse_event``)."""
    return {200: {"description": description, "content": {MEDIA_TYPE: {"schema": sse_event(data)}}}}
