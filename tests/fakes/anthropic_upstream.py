"""Replies in the Anthropic Messages API's streaming format, for the fake upstream server.

The server is ``FakeOpenAI`` (tests/fakes/openai_upstream.py): it plays any ``Reply`` on any path,
write by write. ``AnthropicReply`` builds the event stream ``POST /v1/messages`` answers with
``stream: true``: named SSE events (``event: ...`` + ``data: {...}``) in the documented order::

    AnthropicReply().start(input_tokens=12).text("你好", "!").stop(output_tokens=3)
    AnthropicReply().start().tool_use("toolu_1", "calculator", '{"expr', 'ession": "2+3"}').stop("tool_use")
    AnthropicReply.api_error(429, "rate_limit_error", "slow down", retry_after=2)

Each event is one write (so one HTTP chunk); ``split_at`` and ``pause`` come from ``Reply``.
"""

from __future__ import annotations

import json
from typing import Any, Self

from tests.fakes.openai_upstream import Reply

__all__ = ["AnthropicReply"]


class AnthropicReply(Reply):
    def __init__(self, status: int = 200, **kwargs: Any) -> None:
        super().__init__(status, **kwargs)
        self.index = -1  # the last content block's index

    @classmethod
    def message(
        cls, *deltas: str, usage: tuple[int, int] = (10, 5), pause: float = 0.0, ping: bool = False
    ) -> AnthropicReply:
        """A whole text answer: start, one text block with a delta per piece, stop."""
        reply = cls().start(input_tokens=usage[0])
        if ping:
            reply.ping()
        return reply.text(*deltas, pause=pause).stop(output_tokens=usage[1])

    @classmethod
    def api_error(
        cls, status: int, type: str, message: str, *, retry_after: float | None = None
    ) -> AnthropicReply:
        """An HTTP error with Anthropic's body ``{"type": "error", "error": {"type", "message"}}``."""
        headers = {"content-type": "application/json", "request-id": "req_fake"}
        if retry_after is not None:
            headers["retry-after"] = str(retry_after)
        reply = cls(status, headers=headers)
        reply.raw(json.dumps({"type": "error", "error": {"type": type, "message": message}}))
        return reply

    def event(self, payload: Any) -> Self:
        """``event: <type>`` and ``data: <payload>``, as one write."""
        data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        return self.raw(f"event: {payload['type']}{self.newline}data: {data}{self.newline * 2}")

    def start(self, *, input_tokens: int | None = 10, cache_read: int = 0) -> Self:
        """``message_start``; ``input_tokens=None`` sends no usage (as some compatible servers do)."""
        message: dict[str, Any] = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": self.model,
            "stop_reason": None,
            "stop_sequence": None,
        }
        if input_tokens is not None:
            message["usage"] = {"input_tokens": input_tokens, "output_tokens": 1}
            if cache_read:
                message["usage"]["cache_read_input_tokens"] = cache_read
        return self.event({"type": "message_start", "message": message})

    def ping(self) -> Self:
        return self.event({"type": "ping"})

    def text(self, *deltas: str, pause: float = 0.0) -> Self:
        """One text block: its start, a ``text_delta`` per piece (``pause`` s apart), its stop."""
        self.index += 1
        self.event(
            {
                "type": "content_block_start",
                "index": self.index,
                "content_block": {"type": "text", "text": ""},
            }
        )
        for i, delta in enumerate(deltas):
            if i and pause:
                self.pause(pause)
            self.event(
                {
                    "type": "content_block_delta",
                    "index": self.index,
                    "delta": {"type": "text_delta", "text": delta},
                }
            )
        return self.event({"type": "content_block_stop", "index": self.index})

    def thinking(self, thought: str) -> Self:
        """An extended-thinking block (never shown as text)."""
        self.index += 1
        block = {"type": "thinking", "thinking": ""}
        self.event({"type": "content_block_start", "index": self.index, "content_block": block})
        delta = {"type": "thinking_delta", "thinking": thought}
        self.event({"type": "content_block_delta", "index": self.index, "delta": delta})
        signature = {"type": "signature_delta", "signature": "c2ln"}
        self.event({"type": "content_block_delta", "index": self.index, "delta": signature})
        return self.event({"type": "content_block_stop", "index": self.index})

    def tool_use(self, id: str, name: str, *fragments: str) -> Self:
        """A ``tool_use`` block whose input streams as ``input_json_delta`` fragments."""
        self.index += 1
        block = {"type": "tool_use", "id": id, "name": name, "input": {}}
        self.event({"type": "content_block_start", "index": self.index, "content_block": block})
        for fragment in fragments:
            delta = {"type": "input_json_delta", "partial_json": fragment}
            self.event({"type": "content_block_delta", "index": self.index, "delta": delta})
        return self.event({"type": "content_block_stop", "index": self.index})

    def stop(self, reason: str = "end_turn", *, output_tokens: int | None = 5) -> Self:
        """``message_delta`` (stop reason, cumulative output tokens), then ``message_stop``."""
        delta: dict[str, Any] = {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": None},
        }
        if output_tokens is not None:
            delta["usage"] = {"output_tokens": output_tokens}
        self.event(delta)
        return self.event({"type": "message_stop"})

    def stream_error(self, type: str = "overloaded_error", message: str = "Overloaded") -> Self:
        """An ``error`` event mid-stream (the server ends the stream after it)."""
        return self.event({"type": "error", "error": {"type": type, "message": message}})
