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
- Every failure becomes ``UpstreamError`` / ``UpstreamTimeout`` raised ``from`` its cause, with a message
  fit for a user: the HTTP status and a short excerpt of the upstream's own message, the key redacted.

Without an injected client, calls share one ``httpx.AsyncClient`` per event loop (`shared_client`), so
a run's second model call, and the next run's, reuse the kept-alive connection instead of paying a new
TCP and TLS handshake. A client is never shared across loops: its connections belong to the loop that
opened them, and the Lambda buffered path, uvicorn and the tests each run loops of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import uuid
import weakref
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

import httpx

from agentstream.core.events import Usage
from agentstream.core.providers._sse import SSEDecoder
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
from agentstream.errors import UpstreamError, UpstreamTimeout

if TYPE_CHECKING:
    import ssl
    from collections.abc import AsyncGenerator, AsyncIterator, Sequence

    from agentstream.config import Settings

__all__ = ["OpenAIProvider", "shared_client", "warm_up"]

_EXCERPT_CHARS = 200
_ERROR_BODY_BYTES = 16_384
# How long the end of the body may take after ``[DONE]`` (it normally comes in the same read).
_END_AFTER_DONE_SECONDS = 0.25
# Per event loop. Each streamed call holds a connection for its whole reply, so max_connections caps
# the model calls one process streams at once (more wait for a free one, up to the read timeout).
# Idle connections live 30 s: across a tool step and the gap between two invocations, and below the
# usual 60 s idle timeout of load balancers; one the server closed first is noticed and not reused.
_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30.0)

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
    weakref.WeakKeyDictionary()
)
_clients_lock = threading.Lock()


def warm_up() -> None:
    """Pay now, at start-up, what the first model call would: the TLS context (the CA bundle) and the
    connection layers that httpx and anyio import only when they first connect."""
    import httpcore  # noqa: F401  (httpx's transport: imported when its first client is made)
    from anyio import connect_tcp  # noqa: F401  (anyio loads its socket layer on first use)

    _ssl_context()


def shared_client() -> httpx.AsyncClient:
    """The running event loop's client, made on first use (and again if it was closed)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        with _clients_lock:
            # A client's kept-alive connections refer to their loop, so a weak key alone would never let
            # a closed loop (and its client) go.
            for closed in [other for other in _clients if other.is_closed()]:
                del _clients[closed]
            client = _clients[loop] = httpx.AsyncClient(verify=_ssl_context(), limits=_LIMITS)
    return client


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
        fold_system_into_user: bool = False,
    ) -> None:
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._api_key = api_key or None
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
                await self._check_response(response)
                decoder = SSEDecoder()
                held = ""  # a high surrogate whose low half is in the next chunk
                chunks = response.aiter_bytes()
                async for data in chunks:
                    for sse in decoder.feed(data):
                        if sse.data == "[DONE]":
                            step.done = True
                            break
                        text, held = _pair_surrogates(held + self._apply(step, sse.event, sse.data))
                        if text:
                            yield TextChunk(text)
                    if step.done:
                        await _read_to_the_end(chunks)
                        break
                if held:
                    yield TextChunk("\ufffd")  # the model's text ended inside a character
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(_timeout_message(exc)) from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(self._transport_message(exc)) from exc
        except UnicodeDecodeError as exc:
            raise UpstreamError("the model API sent a stream that is not valid UTF-8") from exc
        if not step.done and step.finish_reason is None:
            raise UpstreamError("the model API closed the connection before the reply was complete")
        calls = step.tool_calls()
        for call in calls:
            yield call
        if step.usage is not None:
            yield UsageReport(step.usage)
        yield StepEnd(step.finish_reason or ("tool_calls" if calls else "stop"))

    def _body(self, request: ModelRequest) -> dict[str, Any]:
        """The request JSON; ``request.extra`` adds or overrides fields (a ``None`` value removes one)."""
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
        body.update(request.extra)
        body["stream"] = True
        return {key: value for key, value in body.items() if value is not None}

    async def _check_response(self, response: httpx.Response) -> None:
        """Raise for HTTP errors, and for JSON answers where an event stream was asked for."""
        content_type = response.headers.get("content-type", "")
        if response.is_success and not content_type.startswith("application/json"):
            return
        body = bytearray()
        async for data in response.aiter_bytes():
            body += data
            if len(body) >= _ERROR_BODY_BYTES:
                break
        detail = self._redact(_error_text(body.decode("utf-8", errors="replace")))
        if not response.is_success:
            reason = detail or response.reason_phrase
            raise UpstreamError(f"the model API answered HTTP {response.status_code}: {reason}")
        raise UpstreamError(f"the model API answered JSON instead of an event stream: {detail}")

    def _apply(self, step: _Step, event: str, data: str) -> str:
        """Parse one stream event into ``step``; return its text."""
        if event == "error":
            detail = self._redact(_error_text(data))
            raise UpstreamError(f"the model API reported an error mid-stream: {detail}")
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise UpstreamError(f"the model API sent a malformed stream chunk: {_excerpt(data)}") from exc
        if not isinstance(chunk, dict):
            raise UpstreamError(f"the model API sent a malformed stream chunk: {_excerpt(data)}")
        if chunk.get("error") is not None:
            detail = self._redact(_message_of(chunk) or _excerpt(data))
            raise UpstreamError(f"the model API reported an error mid-stream: {detail}")
        try:
            return step.apply(chunk)
        except (AttributeError, TypeError) as exc:  # a field of an unexpected type
            raise UpstreamError(f"the model API sent a malformed stream chunk: {_excerpt(data)}") from exc

    def _transport_message(self, exc: httpx.HTTPError) -> str:
        if isinstance(exc, httpx.ConnectError):
            return f"could not connect to the model API at {self._url}"
        if isinstance(exc, httpx.RemoteProtocolError):
            return "the model API closed the connection before the reply was complete"
        return self._redact(f"the model API request failed: {type(exc).__name__}: {_excerpt(str(exc))}")

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "[redacted]") if self._api_key else text


async def _read_to_the_end(chunks: AsyncIterator[bytes]) -> None:
    """Read what follows ``[DONE]``: a connection whose response was not read to its end is closed, not
    reused. A server that keeps the body open does not hold up the step; its connection is closed."""
    with contextlib.suppress(TimeoutError, httpx.HTTPError):
        async with asyncio.timeout(_END_AFTER_DONE_SECONDS):
            async for _ in chunks:
                pass


_SURROGATE = re.compile("[\ud800-\udfff]")


def _pair_surrogates(text: str) -> tuple[str, str]:
    """Text safe to send, and a trailing high surrogate to hold for the next chunk.

    JSON may escape a character outside the BMP as a surrogate pair (``"\\ud83d\\ude00"``), and a
    server may put the two halves in two chunks: joined here, they become the one real character.
    A surrogate that has no partner at all is not text: it becomes U+FFFD rather than break encoding.
    """
    if not _SURROGATE.search(text):
        return text, ""
    held = ""
    if "\ud800" <= text[-1] <= "\udbff":
        text, held = text[:-1], text[-1]
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace"), held


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
            f"the model sent invalid JSON arguments for tool {call.name!r}: {_excerpt(raw)}"
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


def _error_text(text: str) -> str:
    """The upstream's own error message from an error body (JSON in any of the usual shapes, or text)."""
    try:
        payload = json.loads(text)
    except ValueError:
        return _excerpt(text)
    return _message_of(payload) or _excerpt(text)


def _message_of(payload: Any) -> str:
    """``{"error": {"message"}}`` (OpenAI, Zhipu, DeepSeek), ``{"error": "..."}`` (Ollama, llama.cpp),
    ``{"message"}`` (vLLM), ``{"detail": str or [{"msg"}]}`` (FastAPI servers)."""
    if isinstance(payload, list) and payload:
        return _message_of(payload[0])
    if not isinstance(payload, dict):
        return ""
    for key in ("error", "message", "detail", "msg"):
        value = payload.get(key)
        if isinstance(value, str) and value:
            return _excerpt(value)
        nested = _message_of(value) if isinstance(value, dict | list) else ""
        if nested:
            return nested
    return ""


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _EXCERPT_CHARS else flat[: _EXCERPT_CHARS - 1] + "…"


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _timeout_message(exc: httpx.TimeoutException) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return "timed out connecting to the model API"
    if isinstance(exc, httpx.ReadTimeout):
        return "the model API stopped sending (read timeout)"
    return "the model API request timed out"


@cache
def _ssl_context() -> ssl.SSLContext:
    """Built once: loading the CA bundle costs tens of milliseconds, too much for every model call."""
    return httpx.create_ssl_context()


async def create(settings: Settings) -> OpenAIProvider:
    """The provider as configured by the environment (the key may come from Secrets Manager)."""
    api_key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
    if api_key is None and settings.openai_api_key_secret_id:
        from agentstream.secrets import get_secret

        api_key = await get_secret(settings.openai_api_key_secret_id)
    return OpenAIProvider(
        base_url=settings.openai_base_url,
        api_key=api_key,
        connect_timeout=settings.upstream_connect_timeout,
        read_timeout=settings.upstream_read_timeout,
        fold_system_into_user=settings.openai_fold_system,
    )
