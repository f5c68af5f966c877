"""OpenAI's Chat Completions wire format: the request body, its turn into a ``ChatInput``, the
``chat.completion`` answer, the ``chat.completion.chunk`` stream and OpenAI's error shape.

An agent is a model. The request's ``messages`` are the conversation; its ``tools`` are client tools,
which the caller runs: the agent's own tools run on the server and never show. The stream is an
encoder of the run's events like ``web/sse.py``'s: every text delta leaves in the write it was taken
in, and the stream ends with exactly one terminal chunk (``finish_reason`` with the usage chunk after
it, or an ``error`` object), then ``data: [DONE]``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentstream.core.events import Done, Error, Start, TextDelta, ToolCall, Usage
from agentstream.core.ids import NAME_PATTERN
from agentstream.core.providers.base import Message, ToolCallRequest, ToolSpec
from agentstream.core.runs import Item
from agentstream.core.service import ChatInput
from agentstream.errors import BadRequest

__all__ = [
    "ChatCompletionChunks",
    "ChatCompletionRequest",
    "completion",
    "error_body",
    "error_status",
    "run_failure",
]

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

# OpenAI's error ``type`` by HTTP status (the SDKs raise by status; the type tells a reader the kind)
_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}

# HTTP status of a run that ended badly, by its error code (for ``stream: false``)
_RUN_STATUS = {
    "rate_limited": 429,
    "context_length_exceeded": 400,
    # the agent's model is unknown to its provider: the operator's configuration, not the request
    "model_not_found": 502,
    "store_unavailable": 503,
    "upstream_timeout": 504,
    "timeout": 504,
    "cancelled": 409,
}


def error_status(code: str) -> int:
    """The HTTP status for a run that ended with ``code``."""
    if code in _RUN_STATUS:
        return _RUN_STATUS[code]
    return 502 if code.startswith("upstream") or code == "step_limit_exceeded" else 500


def error_body(status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    """``{"error": {"message", "type", "param", "code"}}`` as OpenAI answers it."""
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


# --- the request ---------------------------------------------------------------------------------


class _Lenient(BaseModel):
    """OpenAI clients send fields this service has no use for (``name``, ``annotations``, ...)."""

    model_config = ConfigDict(extra="ignore")


class TextPart(_Lenient):
    type: Literal["text"]
    text: str


def _text_parts(value: Any) -> Any:
    if isinstance(value, list):
        for part in value:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind != "text":
                raise ValueError(f"content parts of type {kind!r} are not supported; send text")
    return value


Content = str | list[TextPart]


def _text(content: Content | None) -> str:
    if content is None:
        return ""
    return content if isinstance(content, str) else "".join(p.text for p in content)


class SystemMessage(_Lenient):
    role: Literal["system", "developer"]
    content: Content

    _parts = field_validator("content", mode="before")(_text_parts)


class UserMessage(_Lenient):
    role: Literal["user"]
    content: Content

    _parts = field_validator("content", mode="before")(_text_parts)


class FunctionCall(_Lenient):
    name: str
    arguments: str


class ToolCallIn(_Lenient):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class AssistantMessage(_Lenient):
    role: Literal["assistant"]
    content: Content | None = None
    tool_calls: list[ToolCallIn] | None = None

    _parts = field_validator("content", mode="before")(_text_parts)


class ToolMessage(_Lenient):
    role: Literal["tool"]
    content: Content
    tool_call_id: str

    _parts = field_validator("content", mode="before")(_text_parts)


ChatMessage = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")
]


class FunctionDefinition(_Lenient):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ToolDefinition(_Lenient):
    type: Literal["function"]
    function: FunctionDefinition


class StreamOptions(_Lenient):
    include_usage: bool = False


class ChatCompletionRequest(_Lenient):
    """``POST /v1/chat/completions``. Sampling settings are the agent's: ``temperature``,
    ``max_tokens`` and the like are accepted and left to the agent's model configuration."""

    model: str = Field(..., min_length=1, max_length=200, description="an agent's id, or its unique name")
    messages: list[ChatMessage] = Field(..., min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[ToolDefinition] = Field(default_factory=list, max_length=128)
    tool_choice: Any = None
    user: str | None = Field(None, max_length=256, description="the end user's id")
    n: int = Field(1, ge=1, le=1, description="one choice per request")

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def client_tools(self) -> list[ToolSpec]:
        if self.tool_choice == "none":
            return []
        return [ToolSpec(t.function.name, t.function.description, t.function.parameters) for t in self.tools]

    def to_input(self, session_id: str | None) -> ChatInput:
        """The last message is the turn (a user message, or tool results); the others its history."""
        *earlier, last = self.messages
        if isinstance(last, UserMessage):
            message: str | None = _text(last.content)
        elif isinstance(last, ToolMessage):
            message, earlier = None, self.messages
        else:
            raise BadRequest("messages: the last message must be the user's or a tool's")
        return ChatInput(
            message=message,
            user_id=_user_id(self.user),
            session_id=session_id,
            history=list(_history(earlier)),
            client_tools=self.client_tools(),
        )


def _user_id(user: str | None) -> str:
    """OpenAI's ``user`` is any string: one that is not a valid user id here gets a stable one."""
    if not user:
        return "anonymous"
    if NAME_PATTERN.match(user):
        return user
    return "user:" + hashlib.sha256(user.encode()).hexdigest()[:32]


def _history(
    messages: Iterable[SystemMessage | UserMessage | AssistantMessage | ToolMessage],
) -> Iterable[Message]:
    names: dict[str, str] = {}  # tool call id -> function name (tool messages do not repeat it)
    for i, m in enumerate(messages):
        if isinstance(m, SystemMessage):
            yield Message("system", _text(m.content))
        elif isinstance(m, UserMessage):
            yield Message("user", _text(m.content))
        elif isinstance(m, AssistantMessage):
            calls = []
            for call in m.tool_calls or ():
                try:
                    arguments = json.loads(call.function.arguments or "{}")
                except ValueError as e:
                    raise BadRequest(f"messages.{i}.tool_calls: arguments are not JSON") from e
                if not isinstance(arguments, dict):
                    raise BadRequest(f"messages.{i}.tool_calls: arguments must be a JSON object")
                names[call.id] = call.function.name
                calls.append(ToolCallRequest(call.id, call.function.name, arguments))
            yield Message("assistant", _text(m.content), tool_calls=tuple(calls))
        else:
            yield Message(
                "tool", _text(m.content), tool_call_id=m.tool_call_id, name=names.get(m.tool_call_id)
            )


# --- the answer ----------------------------------------------------------------------------------


def _usage(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def _tool_call(call: ToolCall, index: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {} if index is None else {"index": index}
    out.update(id=call.id, type="function", function={"name": call.name, "arguments": _dumps(call.arguments)})
    return out


def _finish_reason(done: Done) -> str:
    return "tool_calls" if done.pending_tool_calls else "stop"


def completion(completion_id: str, model: str, done: Done) -> dict[str, Any]:
    """The ``chat.completion`` of a run that completed (``stream: false``)."""
    message: dict[str, Any] = {"role": "assistant", "content": done.final_response, "refusal": None}
    if done.pending_tool_calls:
        message["content"] = done.final_response or None
        message["tool_calls"] = [_tool_call(c) for c in done.pending_tool_calls]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": _finish_reason(done)}
        ],
        "usage": _usage(done.usage),
    }


_ENDED = {
    "timeout": "the run reached its time limit before the answer was complete",
    "cancelled": "the run was cancelled",
}


def run_failure(done: Done, error: Error | None) -> tuple[str, str]:
    """(code, message) of a run that did not complete: its error event, or how it ended."""
    if error is not None:
        return error.code, error.message
    return done.status, _ENDED.get(done.status, "the run failed")


class ChatCompletionChunks:
    """The encoder of a run's events as ``chat.completion.chunk`` SSE (``EventStreamResponse(encode=)``).

    ``delta.role`` goes out when the run starts, each text delta as one chunk, each call of a client
    tool as one ``tool_calls`` delta; the agent's own tool calls, results and progress are not shown.
    """

    def __init__(self, completion_id: str, model: str, client_tools: Iterable[str], *, include_usage: bool):
        envelope = _dumps(
            {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time())}
        )
        self._prefix = envelope[:-1] + ',"model":' + _dumps(model) + ',"system_fingerprint":null'
        self._head = "data: " + self._prefix + ',"choices":[{"index":0,"delta":'
        self._tail = (
            ',"logprobs":null,"finish_reason":null}]' + (',"usage":null' if include_usage else "") + "}\n\n"
        )
        self._client_tools = frozenset(client_tools)
        self._include_usage = include_usage
        self._calls = 0
        self._failed = False

    def __call__(self, items: list[Item]) -> bytes:
        out: list[str] = []
        head, tail = self._head, self._tail
        for _, event, _ in items:
            if isinstance(event, TextDelta):
                out.append(head + '{"content":' + _dumps(event.text) + "}" + tail)
            elif isinstance(event, Start):
                out.append(head + '{"role":"assistant","content":"","refusal":null}' + tail)
            elif isinstance(event, ToolCall):
                if event.name in self._client_tools:
                    delta = {"tool_calls": [_tool_call(event, self._calls)]}
                    self._calls += 1
                    out.append(head + _dumps(delta) + tail)
            elif isinstance(event, Error):
                out.append(self._error(event.code, event.message))
            elif isinstance(event, Done):
                out.append(self._end(event))
        return "".join(out).encode()

    def _error(self, code: str, message: str) -> str:
        self._failed = True
        return "data: " + _dumps(error_body(error_status(code), code, message)) + "\n\n"

    def _end(self, done: Done) -> str:
        if self._failed:  # the error was the terminal chunk
            return "data: [DONE]\n\n"
        if done.status != "completed":
            return self._error(*run_failure(done, None)) + "data: [DONE]\n\n"
        finish = (
            "data: "
            + self._prefix
            + ',"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"'
            + _finish_reason(done)
            + '"}]'
            + (',"usage":null' if self._include_usage else "")
            + "}\n\n"
        )
        if self._include_usage:
            finish += (
                "data: " + self._prefix + ',"choices":[],"usage":' + _dumps(_usage(done.usage)) + "}\n\n"
            )
        return finish + "data: [DONE]\n\n"
