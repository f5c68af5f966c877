"""The ``openai`` provider: any OpenAI-compatible ``/chat/completions`` endpoint, streamed over httpx.

Works with OpenAI, Zhipu GLM, DeepSeek, vLLM, Ollama and the llama.cpp server. Design:

- One POST per model call with ``stream: true`` and ``stream_options.include_usage``, opened with
  ``async with client.stream(...)`` inside the async generator: closing the generator (``aclose()``, task
  cancellation) leaves that block and closes the upstream response at once.
- The body is read as raw bytes and parsed by our own small SSE decoder (``_sse.py``) that decodes UTF-8
  incrementally, so a character split across network reads is never broken, and every event is handled
  the moment its blank line arrives: each non-empty ``delta.content`` is yielded as a ``TextChunk``
  straight away.
- Tool calls stream as fragments keyed by ``index`` (id and name first, arguments as pieces of a JSON
  string); they are put back together and yielded whole, arguments parsed, when the step ends. Usage
  comes from the usage chunk (the last one wins: some servers repeat it); servers that send none
  (llama.cpp) yield no ``UsageReport``. ``StepEnd`` is always last.
- A stream is complete at ``data: [DONE]`` or, for servers that omit it, at the end of the body after a
  ``finish_reason``; ending any other way means the connection dropped, which is an error. After
  ``[DONE]`` the end of the body is still read (briefly), so that the connection can be reused.
- Every failure becomes an ``UpstreamError`` with the contract's code (``_errors.classify``: an HTTP
  status, or the error's type or code in the body or a mid-stream error chunk) raised ``from`` its cause,
  with a message fit for a user: the HTTP status and a short excerpt of the upstream's own message, the
  key redacted.

Without an injected client, calls share one ``httpx.AsyncClient`` per event loop (``_http.shared_client``,
also used by the ``anthropic`` provider), so a run's second model call, and the next run's, reuse the
kept-alive connection instead of paying a new TCP and TLS handshake.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from agentstream.core.events import Usage
from agentstream.core.providers._http import (
    check_stream_response,
    error_detail,
    excerpt,
    read_to_the_end,
    redactor,
    shared_client,
    transport_error,
    upstream_access,
    warm_up,
)
from agentstream.core.providers._sse import SSEDecoder
from agentstream.core.providers._text import pair_surrogates
from agentstream.core.providers.base import (
    Message,
    ModelRequest,
    ProviderEvent,
    StepEnd,
    TextChunk,
    ToolCallRequest,
    ToolSpec,
    UsageReport,
)
from agentstream.errors import UpstreamError

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Sequence

    from agentstream.config import Settings
    from agentstream.core.providers.base import EndpointAccess

__all__ = ["OpenAIProvider", "create", "shared_client", "warm_up"]


class OpenAIProvider:
    """Streams chat completions from an OpenAI-compatible endpoint (``base_url`` ends in ``/v1``)."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        client: httpx.AsyncClient | None = None,
        name: str = "openai",
        fold_system_into_user: bool = False,
    ) -> None:
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._api_key = api_key or None
        # how errors name the upstream: the provider, or the operator's endpoint name (never its URL)
        self._name = name
        self._redact = redactor(base_url, self._api_key)
        # `read` bounds the wait between two reads of the stream, so a stalled stream times out.
        self._timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        self._client = client
        self._fold_system = fold_system_into_user

    async def stream(self, request: ModelRequest) -> AsyncGenerator[ProviderEvent, None]:
        headers = {"Accept": "text/event-stream", "Accept-Encoding": "identity"}
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key}"
        step = _Step()
        client = self._client if self._client is not None else shared_client()
        try:
            async with client.stream(
                "POST", self._url, json=self._body(request), headers=headers, timeout=self._timeout
            ) as response:
                await check_stream_response(response, self._redact, name=self._name)
                decoder = SSEDecoder()
                held = ""  # a high surrogate whose low half is in the next chunk
                chunks = response.aiter_bytes()
                async for data in chunks:
                    for sse in decoder.feed(data):
                        if sse.data == "[DONE]":
                            step.done = True
                            break
                        text, held = pair_surrogates(held + self._apply(step, sse.event, sse.data))
                        if text:
                            yield TextChunk(text)
                    if step.done:
                        await read_to_the_end(chunks)
                        break
                if held:
                    yield TextChunk("\ufffd")  # the model's text ended inside a character
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise transport_error(exc, name=self._name, redact=self._redact) from exc
        except UnicodeDecodeError as exc:
            raise UpstreamError("the model API sent a stream that is not valid UTF-8") from exc
        if not step.done and step.finish_reason is None:
            raise UpstreamError(
                "the model API closed the connection before the reply was complete", retryable=True
            )
        calls = step.tool_calls()
        for call in calls:
            yield call
        if step.usage is not None:
            yield UsageReport(step.usage)
        yield StepEnd(step.finish_reason or ("tool_calls" if calls else "stop"))

    def _body(self, request: ModelRequest) -> dict[str, Any]:
        """The request JSON; ``request.extra`` adds or overrides sampling fields (a ``None`` value
        removes one), never what the request is about (``_OWN_FIELDS``)."""
        body: dict[str, Any] = {
            "model": request.model,
            "messages": _messages(request.messages, fold_system=self._fold_system),
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
        }
        if request.tools:
            body["tools"] = [_tool(spec) for spec in request.tools]
        body.update({key: value for key, value in request.extra.items() if key not in _OWN_FIELDS})
        return {key: value for key, value in body.items() if value is not None}

    def _malformed(self, data: str) -> UpstreamError:
        return UpstreamError(f"the model API sent a malformed stream chunk: {self._redact(excerpt(data))}")

    def _apply(self, step: _Step, event: str, data: str) -> str:
        """Parse one stream event into ``step``; return its text."""
        if event == "error":
            raise self._stream_error(data)
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise self._malformed(data) from exc
        if not isinstance(chunk, dict):
            raise self._malformed(data)
        if chunk.get("error") is not None:
            raise self._stream_error(data)
        try:
            return step.apply(chunk)
        except (AttributeError, TypeError) as exc:  # a field of an unexpected type
            raise self._malformed(data) from exc

    def _stream_error(self, data: str) -> UpstreamError:
        from agentstream.core.providers._errors import classify

        detail, kind = error_detail(data)
        detail = self._redact(detail)
        return classify(
            f"the model API ({self._name}) reported an error mid-stream: {detail}", kind=kind, detail=detail
        )


# what the request is about: never set by ``request.extra`` (agents' options are checked before,
# see ``_options.py``; this holds for any caller)
_OWN_FIELDS = frozenset({"model", "messages", "stream", "tools", "tool_choice", "n"})


@dataclass
class _PartialCall:
    id: str | None = None
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class _Step:
    """What one streamed model call said, chunk by chunk."""

    done: bool = False
    finish_reason: str | None = None
    usage: Usage | None = None
    calls: dict[int, _PartialCall] = field(default_factory=dict)

    def apply(self, chunk: dict[str, Any]) -> str:
        """Take in one chunk; return its text (empty when it has none)."""
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = Usage(
                input_tokens=_int(usage.get("prompt_tokens")),
                output_tokens=_int(usage.get("completion_tokens")),
            )
        text = ""
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str):
                text += content
            for fragment in delta.get("tool_calls") or ():
                self._add_fragment(fragment)
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
        return text

    def _add_fragment(self, fragment: dict[str, Any]) -> None:
        index = fragment.get("index")
        if not isinstance(index, int):
            # Servers that send whole calls without an index: a new id starts a new call.
            call_id = fragment.get("id")
            is_new = not self.calls or (call_id and call_id not in {c.id for c in self.calls.values()})
            index = len(self.calls) if is_new else max(self.calls)
        call = self.calls.setdefault(index, _PartialCall())
        if fragment.get("id"):
            call.id = str(fragment["id"])
        function = fragment.get("function") or {}
        if function.get("name"):
            call.name = str(function["name"])
        if isinstance(function.get("arguments"), str):
            call.arguments.append(function["arguments"])

    def tool_calls(self) -> list[ToolCallRequest]:
        return [_finish_call(self.calls[index]) for index in sorted(self.calls)]


def _finish_call(call: _PartialCall) -> ToolCallRequest:
    if not call.name:
        raise UpstreamError("the model API sent a tool call without a function name")
    raw = "".join(call.arguments)
    try:
        arguments = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        raise UpstreamError(
            f"the model sent invalid JSON arguments for tool {call.name!r}: {excerpt(raw)}"
        ) from exc
    if not isinstance(arguments, dict):
        raise UpstreamError(f"the model sent arguments for tool {call.name!r} that are not a JSON object")
    return ToolCallRequest(id=call.id or f"call_{uuid.uuid4().hex[:24]}", name=call.name, arguments=arguments)


def _messages(messages: Sequence[Message], *, fold_system: bool) -> list[dict[str, Any]]:
    if fold_system:
        messages = _fold_system(messages)
    return [_message(message) for message in messages]


def _fold_system(messages: Sequence[Message]) -> list[Message]:
    """Put the system text in front of the first user message, for servers that drop system messages."""
    system = "\n\n".join(m.content for m in messages if m.role == "system" and m.content)
    rest = [m for m in messages if m.role != "system"]
    if not system:
        return rest
    for i, message in enumerate(rest):
        if message.role == "user":
            rest[i] = Message(role="user", content=f"{system}\n\n{message.content}", name=message.name)
            return rest
    return [Message(role="user", content=system), *rest]


def _message(message: Message) -> dict[str, Any]:
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.name is not None:
        out["name"] = message.name
    if message.role == "assistant" and message.tool_calls:
        out["content"] = message.content or None
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)},
            }
            for call in message.tool_calls
        ]
    return out


def _tool(spec: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": spec.name, "description": spec.description, "parameters": spec.parameters},
    }


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


async def create(settings: Settings, endpoint: EndpointAccess | None = None) -> OpenAIProvider:
    """The provider as configured by the environment (the key may come from Secrets Manager), or at a
    named endpoint's URL with its key."""
    access = await upstream_access(
        "openai",
        endpoint,
        base_url=settings.openai_base_url,
        api_key=settings.openai_api_key,
        api_key_secret_id=settings.openai_api_key_secret_id,
    )
    return OpenAIProvider(
        base_url=access.base_url,
        api_key=access.api_key,
        connect_timeout=settings.upstream_connect_timeout,
        read_timeout=settings.upstream_read_timeout,
        name=access.name,
        fold_system_into_user=settings.openai_fold_system and endpoint is None,
    )
