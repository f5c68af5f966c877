"""The ``anthropic`` provider: the Anthropic Messages API, streamed over httpx.

``POST {base_url}/v1/messages`` with ``stream: true`` and the headers ``x-api-key`` and
``anthropic-version: 2023-06-01``. Plain httpx rather than the official SDK: ``import anthropic``
costs about 1.2 s and 3,300 modules here (and brings a second HTTP stack), against 0.09 s for httpx,
which the ``openai`` provider already loads; the wire format is a dozen event types.

- The agent's instructions go in ``system``; user and assistant turns alternate (``_turns``); the
  model's tool calls go back as ``tool_use`` blocks and the tools' answers as ``tool_result`` blocks in
  the next user turn.
- The body is read as raw bytes through the same strict incremental SSE/UTF-8 decoder as the
  ``openai`` provider (``_sse.py``): a character split across network reads is never broken, and each
  ``text_delta`` is yielded the moment its event is complete. ``ping`` is ignored; a ``tool_use`` block's
  ``input_json_delta`` fragments are joined and the call is yielded whole when the message ends.
- Usage: ``message_start`` gives the input tokens, ``message_delta`` the (cumulative) output tokens and,
  on newer servers, final input counts; cached input tokens count as input.
- The stream is complete at ``message_stop``; an ``error`` event mid-stream (``overloaded_error``...)
  and every HTTP error become the contract's error codes (``_errors.classify``), the key redacted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from agentstream.core.events import Usage
from agentstream.core.providers._errors import classify
from agentstream.core.providers._http import (
    check_stream_response,
    error_detail,
    excerpt,
    read_to_the_end,
    redactor,
    shared_client,
    transport_error,
    upstream_access,
)
from agentstream.core.providers._sse import SSEDecoder
from agentstream.core.providers._text import pair_surrogates
from agentstream.core.providers._turns import turns
from agentstream.core.providers.base import (
    ModelRequest,
    ProviderEvent,
    StepEnd,
    TextChunk,
    ToolCallRequest,
    UsageReport,
)
from agentstream.errors import UpstreamError

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from agentstream.config import Settings
    from agentstream.core.providers._turns import Turn
    from agentstream.core.providers.base import EndpointAccess

__all__ = ["API_VERSION", "AnthropicProvider", "create"]

API_VERSION = "2023-06-01"
# The API requires max_tokens; this is what an agent that sets none gets.
DEFAULT_MAX_TOKENS = 4096
# stop_reason -> the StepEnd reasons of base.py
_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
}

# what the request is about: never set by ``request.extra`` (agents' options are checked before,
# see ``_options.py``; this holds for any caller)
_OWN_FIELDS = frozenset({"model", "system", "messages", "stream", "tools", "tool_choice"})


class AnthropicProvider:
    """Streams messages from the Anthropic Messages API (``base_url`` without ``/v1``)."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        client: httpx.AsyncClient | None = None,
        name: str = "anthropic",
    ) -> None:
        self._url = base_url.rstrip("/").removesuffix("/v1") + "/v1/messages"
        self._api_key = api_key or None
        # how errors name the upstream: the provider, or the operator's endpoint name (never its URL)
        self._name = name
        self._redact = redactor(base_url, self._api_key)
        # `read` bounds the wait between two reads of the stream (pings come every few seconds).
        self._timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        self._client = client

    async def stream(self, request: ModelRequest) -> AsyncGenerator[ProviderEvent, None]:
        headers = {
            "Accept": "text/event-stream",
            "Accept-Encoding": "identity",
            "anthropic-version": API_VERSION,
        }
        if self._api_key is not None:
            headers["x-api-key"] = self._api_key
        step = _Step()
        client = self._client if self._client is not None else shared_client()
        try:
            async with client.stream(
                "POST", self._url, json=_body(request), headers=headers, timeout=self._timeout
            ) as response:
                await check_stream_response(response, self._redact, name=self._name)
                decoder = SSEDecoder()
                held = ""  # a high surrogate whose low half is in the next delta
                chunks = response.aiter_bytes()
                async for data in chunks:
                    for sse in decoder.feed(data):
                        text, held = pair_surrogates(held + self._apply(step, sse.data))
                        if text:
                            yield TextChunk(text)
                        if step.stopped:
                            break
                    if step.stopped:
                        await read_to_the_end(chunks)
                        break
                if held:
                    yield TextChunk("\ufffd")  # the model's text ended inside a character
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise transport_error(exc, name=self._name, redact=self._redact) from exc
        except UnicodeDecodeError as exc:
            raise UpstreamError("the model API sent a stream that is not valid UTF-8") from exc
        if not step.stopped:
            raise UpstreamError(
                "the model API closed the connection before the reply was complete", retryable=True
            )
        calls = step.tool_calls()
        for call in calls:
            yield call
        if step.usage_seen:
            yield UsageReport(step.usage())
        yield StepEnd(_STOP_REASONS.get(step.stop_reason or "", step.stop_reason or "stop"))

    def _malformed(self, data: str) -> UpstreamError:
        return UpstreamError(f"the model API sent a malformed stream event: {self._redact(excerpt(data))}")

    def _apply(self, step: _Step, data: str) -> str:
        """Take in one event; return its text (empty when it has none)."""
        try:
            event = json.loads(data)
        except ValueError as exc:
            raise self._malformed(data) from exc
        if not isinstance(event, dict):
            raise self._malformed(data)
        if event.get("type") == "error":
            detail, kind = error_detail(data)
            detail = self._redact(detail)
            raise classify(
                f"the model API ({self._name}) reported an error mid-stream: {detail}",
                kind=kind,
                detail=detail,
            )
        try:
            return step.apply(event)
        except (AttributeError, TypeError, KeyError) as exc:  # a field missing or of an unexpected type
            raise self._malformed(data) from exc


@dataclass
class _PartialCall:
    id: str
    name: str
    start_input: dict[str, Any]
    fragments: list[str] = field(default_factory=list)


@dataclass
class _Step:
    """What one streamed message said, event by event."""

    stopped: bool = False
    stop_reason: str | None = None
    usage_seen: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    calls: dict[int, _PartialCall] = field(default_factory=dict)

    def apply(self, event: dict[str, Any]) -> str:
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event["delta"]
            if delta.get("type") == "text_delta":
                return str(delta["text"])
            if delta.get("type") == "input_json_delta":
                self.calls[event["index"]].fragments.append(str(delta["partial_json"]))
        elif kind == "content_block_start":
            block = event["content_block"]
            if block.get("type") == "text":
                return str(block.get("text") or "")
            if block.get("type") == "tool_use":
                start_input = block.get("input")
                self.calls[event["index"]] = _PartialCall(
                    str(block["id"]), str(block["name"]), start_input if isinstance(start_input, dict) else {}
                )
        elif kind == "message_start":
            self._count(event["message"].get("usage"))
        elif kind == "message_delta":
            self.stop_reason = event.get("delta", {}).get("stop_reason") or self.stop_reason
            self._count(event.get("usage"))
        elif kind == "message_stop":
            self.stopped = True
        # ping, content_block_stop, thinking and citation deltas, and event types added later: nothing
        return ""

    def _count(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        for name, value in usage.items():
            if isinstance(value, int):
                self.counts[name] = value  # cumulative: the latest count wins
                self.usage_seen = True

    def usage(self) -> Usage:
        counts = self.counts
        cached = counts.get("cache_creation_input_tokens", 0) + counts.get("cache_read_input_tokens", 0)
        return Usage(
            input_tokens=counts.get("input_tokens", 0) + cached,
            output_tokens=counts.get("output_tokens", 0),
        )

    def tool_calls(self) -> list[ToolCallRequest]:
        return [_finish_call(self.calls[index]) for index in sorted(self.calls)]


def _finish_call(call: _PartialCall) -> ToolCallRequest:
    raw = "".join(call.fragments)
    if not raw.strip():
        return ToolCallRequest(id=call.id, name=call.name, arguments=call.start_input)
    try:
        arguments = json.loads(raw)
    except ValueError as exc:
        raise UpstreamError(
            f"the model sent invalid JSON input for tool {call.name!r}: {excerpt(raw)}"
        ) from exc
    if not isinstance(arguments, dict):
        raise UpstreamError(f"the model sent input for tool {call.name!r} that is not a JSON object")
    return ToolCallRequest(id=call.id, name=call.name, arguments=arguments)


def _body(request: ModelRequest) -> dict[str, Any]:
    """The request JSON; ``request.extra`` adds or overrides sampling fields (a ``None`` value removes
    one), never what the request is about (``_OWN_FIELDS``)."""
    system, conversation = turns(request.messages)
    body: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
        "system": system or None,
        "messages": [_turn(turn) for turn in conversation],
        "temperature": request.temperature,
        "stream": True,
    }
    if request.tools:
        body["tools"] = [
            {"name": spec.name, "description": spec.description, "input_schema": spec.parameters}
            for spec in request.tools
        ]
    body.update({key: value for key, value in request.extra.items() if key not in _OWN_FIELDS})
    return {key: value for key, value in body.items() if value is not None}


def _turn(turn: Turn) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = []
    for message in turn.messages:
        if message.role == "tool":
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id}
            if message.content:
                result["content"] = message.content
            blocks.append(result)
            continue
        if message.content:
            blocks.append({"type": "text", "text": message.content})
        blocks.extend(
            {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
            for call in message.tool_calls
        )
    return {"role": turn.role, "content": blocks}


async def create(settings: Settings, endpoint: EndpointAccess | None = None) -> AnthropicProvider:
    """The provider as configured by the environment (the key may come from Secrets Manager), or at a
    named endpoint's URL with its key."""
    access = await upstream_access(
        "anthropic",
        endpoint,
        base_url=settings.anthropic_base_url,
        api_key=settings.anthropic_api_key,
        api_key_secret_id=settings.anthropic_api_key_secret_id,
    )
    return AnthropicProvider(
        base_url=access.base_url,
        api_key=access.api_key,
        connect_timeout=settings.upstream_connect_timeout,
        read_timeout=settings.upstream_read_timeout,
        name=access.name,
    )
