"""Replies in Amazon Bedrock's ConverseStream wire format, for the fake upstream server.

``ConverseStream`` answers ``application/vnd.amazon.eventstream``: binary frames, each a prelude
(total length, headers length, CRC32 of both), headers (``:event-type``, ``:content-type``,
``:message-type``, or ``:exception-type`` for errors in the stream), a JSON payload and a CRC32 of the
whole frame. ``encode_frame`` writes one (tests check it against botocore's own parser);
``BedrockReply`` builds the frames of a reply in the order Bedrock sends them, one write each::

    BedrockReply().start().text("你好").stop("end_turn").metadata(12, 3)
    BedrockReply().start().tool_use("tooluse_1", "calculator", '{"expr', 'ession": "2+3"}').stop("tool_use")
    BedrockReply.api_error(429, "ThrottlingException", "Too many requests")

The server is ``FakeOpenAI`` (tests/fakes/openai_upstream.py): it plays any ``Reply`` on any path.
Point boto3 at it with ``endpoint_url`` (or ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``).
"""

from __future__ import annotations

import binascii
import json
import struct
from typing import Any, Self

from tests.fakes.openai_upstream import Reply

__all__ = ["BedrockReply", "encode_frame"]

_STRING = 7  # header value type: UTF-8 string with a 2-byte length
# Bedrock pads event payloads with a "p" field of varying length (so sizes do not give text away).
_PAD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"


def encode_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude, prelude CRC, headers, payload, message CRC (big-endian)."""
    encoded = b""
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        encoded += struct.pack("!B", len(raw_name)) + raw_name
        encoded += struct.pack("!BH", _STRING, len(raw_value)) + raw_value
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack("!II", total, len(encoded))
    prelude += struct.pack("!I", binascii.crc32(prelude))
    message = prelude + encoded + payload
    return message + struct.pack("!I", binascii.crc32(message))


class BedrockReply(Reply):
    def __init__(self, status: int = 200, **kwargs: Any) -> None:
        headers = {"content-type": "application/vnd.amazon.eventstream", "x-amzn-requestid": "fake-request"}
        super().__init__(status, headers={**headers, **kwargs.pop("headers", {})}, **kwargs)
        self.index = -1  # the last content block's index

    @classmethod
    def message(cls, *deltas: str, usage: tuple[int, int] = (10, 5), pause: float = 0.0) -> BedrockReply:
        """A whole text answer: start, one text block with a delta per piece, stop, usage."""
        return cls().start().text(*deltas, pause=pause).stop("end_turn").metadata(*usage)

    @classmethod
    def api_error(cls, status: int, code: str, message: str) -> BedrockReply:
        """An HTTP error as Bedrock's REST-JSON protocol answers it (the code in x-amzn-ErrorType)."""
        headers = {
            "content-type": "application/json",
            "x-amzn-errortype": f"{code}:http://internal.amazon.com/coral/com.amazon.bedrock/",
        }
        reply = cls(status, headers=headers)
        reply.raw(json.dumps({"message": message}))
        return reply

    def frame(self, event_type: str, payload: dict[str, Any], *, ensure_ascii: bool = False) -> Self:
        """One ``event`` frame (``payload`` as JSON, padded like Bedrock's), as one write."""
        body = json.dumps(
            {**payload, "p": _PAD[: 1 + len(self.writes) % len(_PAD)]}, ensure_ascii=ensure_ascii
        )
        headers = {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
        return self.raw(encode_frame(headers, body.encode()))

    def start(self) -> Self:
        return self.frame("messageStart", {"role": "assistant"})

    def text(self, *deltas: str, pause: float = 0.0, ensure_ascii: bool = False) -> Self:
        """A text block: a ``contentBlockDelta`` per piece (``pause`` s apart), then its stop."""
        self.index += 1
        for i, delta in enumerate(deltas):
            if i and pause:
                self.pause(pause)
            payload = {"contentBlockIndex": self.index, "delta": {"text": delta}}
            self.frame("contentBlockDelta", payload, ensure_ascii=ensure_ascii)
        return self.frame("contentBlockStop", {"contentBlockIndex": self.index})

    def tool_use(self, tool_use_id: str, name: str, *fragments: str) -> Self:
        """A ``toolUse`` block: its start (id, name), its ``input`` in fragments, its stop."""
        self.index += 1
        start = {"toolUse": {"toolUseId": tool_use_id, "name": name}}
        self.frame("contentBlockStart", {"contentBlockIndex": self.index, "start": start})
        for fragment in fragments:
            payload = {"contentBlockIndex": self.index, "delta": {"toolUse": {"input": fragment}}}
            self.frame("contentBlockDelta", payload)
        return self.frame("contentBlockStop", {"contentBlockIndex": self.index})

    def stop(self, reason: str = "end_turn") -> Self:
        return self.frame("messageStop", {"stopReason": reason})

    def metadata(self, input_tokens: int = 10, output_tokens: int = 5) -> Self:
        usage = {
            "inputTokens": input_tokens,
            "outputTokens": output_tokens,
            "totalTokens": input_tokens + output_tokens,
        }
        return self.frame("metadata", {"usage": usage, "metrics": {"latencyMs": 120}})

    def exception(self, exception_type: str, message: str) -> Self:
        """An exception in the stream (``throttlingException``, ``modelStreamErrorException``...)."""
        headers = {
            ":exception-type": exception_type,
            ":content-type": "application/json",
            ":message-type": "exception",
        }
        return self.raw(encode_frame(headers, json.dumps({"message": message}).encode()))
