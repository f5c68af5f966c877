"""The AI SDK's UI message stream (npm ``ai`` 5.x-7.x, header ``x-vercel-ai-ui-message-stream: v1``):
the body ``DefaultChatTransport`` sends, and the encoder of a run's events as the protocol's parts.

Each part holds only the protocol's own keys (``ai`` 5 validates parts as strict objects and fails the
stream on any other key). One run is one assistant message, its id the run id:

- ``start`` {messageId}, ``message-metadata`` {run_id, session_id}, ``start-step``
- text: ``text-start`` {id}, ``text-delta`` {id, delta} per delta, ``text-end`` {id}
- a tool call: ``tool-input-start`` + ``tool-input-available`` {toolCallId, toolName, input}; its result
  ``tool-output-available`` {toolCallId, output} or ``tool-output-error`` {toolCallId, errorText}
- a further model call: ``finish-step``, ``start-step``
- a notice (a ``metadata`` event other than progress, e.g. ``mcp_unavailable``): ``message-metadata``
  with the notice's keys added to the message's metadata
- the end: ``finish-step``, ``message-metadata`` {run_id, session_id, status, usage, metrics}, then
  exactly one terminal part: ``finish`` (completed), ``error`` (error, timeout, or a replay cut off
  before the run's end) or ``abort`` (cancelled); then ``data: [DONE]``.

The same encoder serves a live run (``EventStreamResponse(encode=)``) and a replay of its log from the
start (``Replay(encoder=)``: the stored ``event_to_dict`` payloads), so a resumed answer is the answer.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentstream.core.events import TextDelta, event_to_dict
from agentstream.core.ids import NAME_PATTERN
from agentstream.core.runs import Item
from agentstream.core.service import ChatInput
from agentstream.errors import BadRequest

__all__ = ["HEADERS", "UIChatRequest", "UIMessageStream"]

HEADERS = {"x-vercel-ai-ui-message-stream": "v1"}

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_DONE = "data: [DONE]\n\n"


class UIMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str = ""
    role: Literal["system", "user", "assistant"]
    parts: list[dict[str, Any]] = Field(default_factory=list)


class UIChatRequest(BaseModel):
    """The body of ``DefaultChatTransport.sendMessages`` (plus ``user_id`` from its ``body`` option).

    The chat id is the session id: the session's stored history is the conversation, and the last
    user message's text parts are the turn's message. Other keys a transport adds are ignored.
    """

    model_config = ConfigDict(extra="ignore")

    id: str = Field(..., pattern=NAME_PATTERN.pattern, description="the chat id: the session id")
    messages: list[UIMessage] = Field(..., min_length=1)
    trigger: Literal["submit-message", "regenerate-message"] = "submit-message"
    messageId: str | None = None
    user_id: str = Field("anonymous", pattern=NAME_PATTERN.pattern)

    def to_input(self) -> ChatInput:
        last = self.messages[-1]
        if last.role != "user":
            raise BadRequest("messages: the last message must be the user's")
        text = "".join(str(p.get("text", "")) for p in last.parts if p.get("type") == "text")
        if not text:
            raise BadRequest("messages: the last user message has no text part")
        return ChatInput(message=text, user_id=self.user_id, session_id=self.id, resumable=True)


def _part(payload: dict[str, Any]) -> str:
    return "data: " + _dumps(payload) + "\n\n"


_STOPPED = {"timeout": "the run reached its time limit before the answer was complete"}


class UIMessageStream:
    """Run events -> UI message stream parts. One instance per response (it tracks the open text
    part and the step); a text delta is written in the same call it is given, never held."""

    def __init__(self) -> None:
        self._text_id: str | None = None
        self._texts = 0
        self._meta: dict[str, Any] = {}
        self._error: str | None = None
        self._ended = False

    # live: the run's ready items
    def __call__(self, items: list[Item]) -> bytes:
        out: list[str] = []
        for _, event, _ in items:
            if type(event) is TextDelta:
                self._delta(event.text, out)
            else:
                self._payload(event_to_dict(event), out)
        return "".join(out).encode()

    # replay: one stored event
    def event(self, seq: int, payload: dict[str, Any]) -> bytes:
        out: list[str] = []
        if payload.get("chunk_type") == "content":
            self._delta(str(payload.get("content", "")), out)
        else:
            self._payload(payload, out)
        return "".join(out).encode()

    def pause(self, why: str, last_id: int) -> bytes:
        """A replay that must stop before the run's end: the stream ends with an error part (the
        answer goes on; the client resumes again, from the start)."""
        if self._ended:
            return b""
        out: list[str] = []
        self._close_text(out)
        self._terminal(_part({"type": "error", "errorText": f"{why}; resume the chat to continue"}), out)
        return "".join(out).encode()

    def _delta(self, text: str, out: list[str]) -> None:
        if self._text_id is None:
            self._text_id = f"text-{self._texts}"
            self._texts += 1
            out.append(_part({"type": "text-start", "id": self._text_id}))
        out.append(
            'data: {"type":"text-delta","id":"' + self._text_id + '","delta":' + _dumps(text) + "}\n\n"
        )

    def _close_text(self, out: list[str]) -> None:
        if self._text_id is not None:
            out.append(_part({"type": "text-end", "id": self._text_id}))
            self._text_id = None

    def _terminal(self, part: str, out: list[str]) -> None:
        self._ended = True
        out.append(part)
        out.append(_DONE)

    def _payload(self, payload: dict[str, Any], out: list[str]) -> None:
        kind = payload.get("chunk_type")
        if kind == "start":
            self._meta = {"run_id": payload.get("run_id"), "session_id": payload.get("session_id")}
            out.append(_part({"type": "start", "messageId": str(payload.get("run_id"))}))
            out.append(_part({"type": "message-metadata", "messageMetadata": self._meta}))
            out.append(_part({"type": "start-step"}))
        elif kind == "tool_call":
            self._close_text(out)
            call = {"toolCallId": payload.get("tool_call_id"), "toolName": payload.get("tool_name")}
            out.append(_part({"type": "tool-input-start", **call}))
            out.append(_part({"type": "tool-input-available", **call, "input": payload.get("arguments")}))
        elif kind == "tool_result":
            call_id = payload.get("tool_call_id")
            content = payload.get("content")
            if payload.get("is_error"):
                out.append(_part({"type": "tool-output-error", "toolCallId": call_id, "errorText": content}))
            else:
                out.append(_part({"type": "tool-output-available", "toolCallId": call_id, "output": content}))
        elif kind == "metadata":
            data = payload.get("data") or {}
            if "progress" in data:  # the next model call: a new step
                self._close_text(out)
                out.append(_part({"type": "finish-step"}))
                out.append(_part({"type": "start-step"}))
            elif isinstance(data, dict) and data:  # a notice (e.g. mcp_unavailable): part of the metadata
                self._meta = {**self._meta, **data}
                out.append(_part({"type": "message-metadata", "messageMetadata": self._meta}))
        elif kind == "error":
            self._error = str(payload.get("content") or "the run failed")
        elif kind == "done":
            self._done(payload, out)

    def _done(self, payload: dict[str, Any], out: list[str]) -> None:
        self._close_text(out)
        out.append(_part({"type": "finish-step"}))
        status = payload.get("status")
        meta = {
            **self._meta,
            "status": status,
            "usage": payload.get("usage"),
            "metrics": payload.get("metrics"),
        }
        out.append(_part({"type": "message-metadata", "messageMetadata": meta}))
        if status == "completed":
            self._terminal(_part({"type": "finish", "finishReason": "stop"}), out)
        elif status == "cancelled":
            self._terminal(_part({"type": "abort"}), out)
        else:
            text = self._error or _STOPPED.get(str(status), f"the run ended: {status}")
            self._terminal(_part({"type": "error", "errorText": text}), out)
