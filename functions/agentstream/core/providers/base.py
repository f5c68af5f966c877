"""The provider interface: every model provider streams provider-neutral events.

A provider is an object with ``stream(request)`` returning an async iterator of ``ProviderEvent``.
Text arrives as ``TextChunk`` as soon as the upstream produces it (already decoded: a chunk never holds
half a character); tool calls arrive whole (``ToolCallRequest``, arguments parsed) once the upstream
has finished streaming them; ``UsageReport`` when the upstream reports token counts; ``StepEnd`` last.
Failures raise ``agentstream.errors.UpstreamError`` or one of its kinds (``UpstreamAuthError``,
``UpstreamRateLimited``, ``ContextLengthExceeded``, ``ModelNotFound``, ``UpstreamTimeout``: the
contract's error codes, see ``_errors.classify``), marked ``retryable`` when another try may work,
with a message that is safe to show a user (no API keys, no raw bodies beyond a short excerpt).

Closing the iterator early (``aclose()``, task cancellation) must close the upstream request promptly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from agentstream.core.events import Usage

__all__ = [
    "EndpointAccess",
    "Message",
    "ModelProvider",
    "ModelRequest",
    "ProviderEvent",
    "StepEnd",
    "TextChunk",
    "ToolCallRequest",
    "ToolSpec",
    "UsageReport",
]

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ToolCallRequest:
    """A complete tool call asked for by the model (its argument deltas already reassembled)."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str
    # assistant messages that asked for tools
    tool_calls: tuple[ToolCallRequest, ...] = ()
    # tool messages: which call they answer
    tool_call_id: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON Schema of the arguments object


@dataclass(frozen=True, slots=True)
class ModelRequest:
    model: str
    messages: Sequence[Message]
    tools: Sequence[ToolSpec] = ()
    temperature: float | None = None
    max_tokens: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TextChunk:
    text: str


@dataclass(frozen=True, slots=True)
class UsageReport:
    usage: Usage


@dataclass(frozen=True, slots=True)
class StepEnd:
    """The model call ended; ``reason`` as the upstream said (``stop``, ``tool_calls``, ``length``)."""

    reason: str


ProviderEvent = TextChunk | ToolCallRequest | UsageReport | StepEnd


@dataclass(frozen=True, slots=True)
class EndpointAccess:
    """A named endpoint (``AGENTSTREAM_ENDPOINTS``), resolved: its URL and key (None: it takes none)."""

    name: str
    base_url: str
    api_key: str | None = field(default=None, repr=False)


class ModelProvider(Protocol):
    def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]: ...
