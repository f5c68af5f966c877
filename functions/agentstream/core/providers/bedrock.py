"""The ``bedrock`` provider: Amazon Bedrock ``ConverseStream`` through boto3's ``bedrock-runtime`` client.

No key: boto3 signs with the function's IAM role (``bedrock:InvokeModelWithResponseStream`` on the
model or inference profile). ``model.name`` is a model id or an inference profile id; region and
endpoint are boto3's (``AWS_REGION``, ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``).

boto3 is blocking, so each call is read by a thread of its own, which hands the parsed events to the
event loop through a bounded hand-off (``_Call``):

- The thread makes the request and iterates boto3's ``EventStream``; the loop awaits one event at a
  time. At most ``_HANDOFF_LIMIT`` events wait between them: when the loop does not take them (a slow
  client, backpressure from the SSE response), the thread stops reading and TCP slows Bedrock down.
  Nothing buffers the whole reply.
- Closing the call (the generator closed, or cancelled by a stop or the deadline) shuts the socket of
  the response down from the loop: closing boto3's ``EventStream`` from another thread does not end a
  read in progress, but a ``shutdown`` does, at once, and tells Bedrock the client is gone, so it
  stops generating. The thread then closes the stream and ends; the loop never waits for it.
- A thread per call, not the default executor: a reply can take minutes, and the executor's few
  workers are shared with every other ``asyncio.to_thread`` (secrets, ...).

Events: ``contentBlockDelta`` text is yielded at once; ``contentBlockStart`` ``toolUse`` blocks and
their streamed ``input`` fragments are joined and yielded whole at the end; ``messageStop`` gives the
stop reason, ``metadata`` the usage. Failures, before the stream (HTTP errors) or in it (exception
events), become the contract's error codes; botocore's own retries are off (``Retrying`` retries, and
only before anything was streamed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.config import Config
from botocore.eventstream import ParserError
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from urllib3.exceptions import HTTPError as TransportError
from urllib3.exceptions import ReadTimeoutError as TransportReadTimeout

from agentstream.core.events import Usage
from agentstream.core.providers._errors import CONTEXT_TOO_LONG, retry_after
from agentstream.core.providers._http import excerpt
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
from agentstream.errors import (
    ContextLengthExceeded,
    ModelNotFound,
    UpstreamAuthError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
)

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from mypy_boto3_bedrock_runtime import BedrockRuntimeClient

    from agentstream.config import Settings
    from agentstream.core.providers._turns import Turn

__all__ = ["BedrockProvider", "create"]

# Events read ahead of the event loop at most (each is one small delta).
_HANDOFF_LIMIT = 64
_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
_AUTH_CODES = frozenset(
    {
        "accessdenied",
        "unrecognizedclient",
        "invalidsignature",
        "signaturedoesnotmatch",
        "incompletesignature",
        "expiredtoken",
        "invalidclienttokenid",
        "missingauthenticationtoken",
        "notauthorized",
    }
)
_NO_SUCH_MODEL = re.compile(
    r"model identifier is invalid|model.*(not found|does not exist|not supported)", re.IGNORECASE
)
_ARN = re.compile(r"arn:aws[\w-]*:[^\s,;\"']+")
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s\"'<>]+", re.IGNORECASE)
# what the request is about: never set by ``request.extra`` (agents' options are checked before,
# see ``_options.py``; this holds for any caller)
_OWN_PARAMS = frozenset({"modelId", "messages", "system", "toolConfig"})


class BedrockProvider:
    """Streams ``ConverseStream`` replies; ``client`` is a boto3 ``bedrock-runtime`` client."""

    def __init__(self, client: BedrockRuntimeClient) -> None:
        self._client = client

    async def stream(self, request: ModelRequest) -> AsyncGenerator[ProviderEvent, None]:
        call = _Call(asyncio.get_running_loop(), _HANDOFF_LIMIT)
        reader = threading.Thread(target=call.run, args=(self._client, _params(request)), daemon=True)
        reader.start()
        step = _Step()
        held = ""  # a high surrogate whose low half is in the next delta
        try:
            while True:
                item = await call.get()
                if isinstance(item, _End):
                    break
                if isinstance(item, BaseException):
                    raise _error(item) from item
                try:
                    text = step.apply(item)
                except (AttributeError, TypeError, KeyError) as exc:
                    detail = excerpt(str(item))
                    raise UpstreamError(f"Amazon Bedrock sent a malformed stream event: {detail}") from exc
                text, held = pair_surrogates(held + text)
                if text:
                    yield TextChunk(text)
        finally:
            call.close()
        if held:
            yield TextChunk("\ufffd")  # the model's text ended inside a character
        if step.stop_reason is None:
            raise UpstreamError(
                "Amazon Bedrock closed the stream before the reply was complete", retryable=True
            )
        calls = step.tool_calls()
        for tool_call in calls:
            yield tool_call
        if step.usage is not None:
            yield UsageReport(step.usage)
        yield StepEnd(_STOP_REASONS.get(step.stop_reason, step.stop_reason))


class _End:
    """The stream ended normally."""


_END = _End()


class _Call:
    """One ``ConverseStream`` call: read by a thread, taken by the event loop, at most ``limit`` apart."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self._loop = loop
        self._limit = limit
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)  # the thread waits here while the hand-off is full
        self._items: deque[dict[str, Any] | BaseException | _End] = deque()
        self._waiter: asyncio.Future[None] | None = None  # the loop waits on this while it is empty
        self._closed = False
        self._body: Any = None  # the HTTP response (urllib3's) being read, once the request was answered

    # --- the reader thread ---

    def run(self, client: BedrockRuntimeClient, params: dict[str, Any]) -> None:
        stream = None
        try:
            stream = client.converse_stream(**params)["stream"]
            with self._lock:
                self._body = getattr(stream, "_raw_stream", None)
                if self._closed:
                    return
            for event in stream:
                if not self._put(dict(event)):
                    return
            self._put(_END)
        except Exception as exc:
            self._put(exc)
        finally:
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()

    def _put(self, item: dict[str, Any] | BaseException | _End) -> bool:
        """Hand ``item`` over, waiting while the hand-off is full; False once the call is closed."""
        with self._space:
            while len(self._items) >= self._limit and not self._closed:
                self._space.wait()
            if self._closed:
                return False
            self._items.append(item)
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
                self._loop.call_soon_threadsafe(_wake, waiter)
        return True

    # --- the event loop ---

    async def get(self) -> dict[str, Any] | BaseException | _End:
        while True:
            with self._lock:
                if self._items:
                    item = self._items.popleft()
                    self._space.notify()
                    return item
                waiter = self._waiter = self._loop.create_future()
            await waiter

    def close(self) -> None:
        """Stop the call now: the thread stops handing over, and a read in progress ends at once."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._items.clear()
            self._space.notify_all()
            body = self._body
        if body is not None:
            _interrupt(body)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _interrupt(body: Any) -> None:
    """End a blocked read of ``body`` (urllib3's response under boto3's EventStream) at once.

    urllib3 (2.3+) shuts the socket down for reading, which wakes the reading thread; that thread then
    closes the stream, and so the connection: Bedrock sees the client go and stops generating. urllib3
    refuses once the whole reply was read and the connection went back to boto3's pool (another call
    may be using it then). Older urllib3: the connection's socket, shut down both ways.
    """
    shutdown = getattr(body, "shutdown", None)
    if shutdown is not None:
        with contextlib.suppress(ValueError, RuntimeError, OSError):
            shutdown()
        return
    sock = getattr(getattr(body, "connection", None), "sock", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            # socket.socket's own: an SSLSocket's would also drop its SSL object under the reader
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


@dataclass
class _PartialCall:
    id: str
    name: str
    fragments: list[str] = field(default_factory=list)


@dataclass
class _Step:
    """What one streamed reply said, event by event (events as boto3 parses them)."""

    stop_reason: str | None = None
    usage: Usage | None = None
    calls: dict[int, _PartialCall] = field(default_factory=dict)

    def apply(self, event: dict[str, Any]) -> str:
        """Take in one event; return its text (empty when it has none)."""
        if (delta_event := event.get("contentBlockDelta")) is not None:
            delta = delta_event["delta"]
            if "text" in delta:
                return str(delta["text"])
            if "toolUse" in delta:
                self.calls[delta_event["contentBlockIndex"]].fragments.append(str(delta["toolUse"]["input"]))
        elif (start := event.get("contentBlockStart")) is not None:
            tool_use = start["start"].get("toolUse")
            if tool_use is not None:
                self.calls[start["contentBlockIndex"]] = _PartialCall(
                    str(tool_use["toolUseId"]), str(tool_use["name"])
                )
        elif (stop := event.get("messageStop")) is not None:
            self.stop_reason = str(stop["stopReason"])
        elif (metadata := event.get("metadata")) is not None:
            usage = metadata.get("usage") or {}
            cached = usage.get("cacheReadInputTokens", 0) + usage.get("cacheWriteInputTokens", 0)
            self.usage = Usage(
                input_tokens=int(usage.get("inputTokens", 0)) + int(cached),
                output_tokens=int(usage.get("outputTokens", 0)),
            )
        # messageStart, contentBlockStop, reasoning and citation deltas: nothing to take
        return ""

    def tool_calls(self) -> list[ToolCallRequest]:
        return [_finish_call(self.calls[index]) for index in sorted(self.calls)]


def _finish_call(call: _PartialCall) -> ToolCallRequest:
    raw = "".join(call.fragments)
    try:
        arguments = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        raise UpstreamError(
            f"the model sent invalid JSON input for tool {call.name!r}: {excerpt(raw)}"
        ) from exc
    if not isinstance(arguments, dict):
        raise UpstreamError(f"the model sent input for tool {call.name!r} that is not a JSON object")
    return ToolCallRequest(id=call.id, name=call.name, arguments=arguments)


def _params(request: ModelRequest) -> dict[str, Any]:
    """``converse_stream``'s parameters; ``request.extra`` adds or overrides them (``None`` removes one;
    an ``inferenceConfig`` there is merged into the agent's), never what the request is about
    (``_OWN_PARAMS``)."""
    system, conversation = turns(request.messages)
    params: dict[str, Any] = {"modelId": request.model, "messages": [_turn(turn) for turn in conversation]}
    if system:
        params["system"] = [{"text": system}]
    inference = {"maxTokens": request.max_tokens, "temperature": request.temperature}
    extra = dict(request.extra)
    if isinstance(extra.get("inferenceConfig"), dict):
        inference.update(extra.pop("inferenceConfig"))
    inference = {key: value for key, value in inference.items() if value is not None}
    if inference:
        params["inferenceConfig"] = inference
    if request.tools:
        params["toolConfig"] = {
            "tools": [
                {
                    "toolSpec": {
                        "name": spec.name,
                        "inputSchema": {"json": spec.parameters},
                        **({"description": spec.description} if spec.description else {}),
                    }
                }
                for spec in request.tools
            ]
        }
    params.update({key: value for key, value in extra.items() if key not in _OWN_PARAMS})
    return {key: value for key, value in params.items() if value is not None}


def _turn(turn: Turn) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = []
    for message in turn.messages:
        if message.role == "tool":
            content = [{"text": message.content or "(no output)"}]
            blocks.append({"toolResult": {"toolUseId": message.tool_call_id, "content": content}})
            continue
        if message.content:
            blocks.append({"text": message.content})
        blocks.extend(
            {"toolUse": {"toolUseId": call.id, "name": call.name, "input": call.arguments}}
            for call in message.tool_calls
        )
    return {"role": turn.role, "content": blocks}


def _error(exc: BaseException) -> UpstreamError:
    """The contract's error for what boto3 raised (before the stream, or an exception event in it)."""
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, ClientError):
        return _client_error(exc)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return UpstreamAuthError(f"Amazon Bedrock: no AWS credentials ({type(exc).__name__})")
    if isinstance(exc, ConnectTimeoutError):
        return UpstreamTimeout("timed out connecting to Amazon Bedrock", retryable=True)
    if isinstance(exc, ReadTimeoutError | TransportReadTimeout):  # before the reply / in its stream
        return UpstreamTimeout("Amazon Bedrock stopped sending (read timeout)")
    if isinstance(exc, EndpointConnectionError):
        return UpstreamError("could not connect to Amazon Bedrock", retryable=True)
    if isinstance(exc, ParamValidationError):
        return UpstreamError(f"invalid request for Amazon Bedrock: {_redact(excerpt(str(exc)))}")
    if isinstance(exc, ParserError):
        return UpstreamError(
            f"Amazon Bedrock sent a stream that could not be read: {_redact(excerpt(str(exc)))}"
        )
    if isinstance(exc, BotoCoreError | TransportError | OSError):
        return UpstreamError(
            f"the connection to Amazon Bedrock failed: {type(exc).__name__}: {_redact(excerpt(str(exc)))}",
            retryable=True,
        )
    return UpstreamError(f"Amazon Bedrock sent a stream that could not be read ({type(exc).__name__})")


def _client_error(exc: ClientError) -> UpstreamError:
    """HTTP errors (``ThrottlingException``...) and exception events (``throttlingException``...)."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    key = code.lower().removesuffix("exception")
    detail = _redact(excerpt(str(error.get("Message") or exc)))
    message = f"Amazon Bedrock answered {code}: {detail}"
    headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    if key in ("throttling", "modelnotready", "servicequotaexceeded", "toomanyrequests"):
        return UpstreamRateLimited(
            message, retryable=key != "servicequotaexceeded", retry_after=retry_after(headers)
        )
    if key in _AUTH_CODES:
        return UpstreamAuthError(message)
    if key == "resourcenotfound" or (key == "validation" and _NO_SUCH_MODEL.search(detail)):
        return ModelNotFound(message)
    if key == "validation" and CONTEXT_TOO_LONG.search(detail):
        return ContextLengthExceeded(message)
    if key == "modeltimeout":
        return UpstreamTimeout(message, retryable=True)
    if key in ("internalserver", "serviceunavailable", "modelstreamerror", "modelerror"):
        return UpstreamError(message, retryable=True)
    return UpstreamError(message)


def _redact(text: str) -> str:
    """Bedrock's messages may name the role and account (AccessDenied), botocore's the endpoint's URL:
    not for the API's users."""
    return _URL.sub("[redacted]", _ARN.sub("[arn]", text))


_clients: dict[tuple[str | None, str | None, float, float], BedrockRuntimeClient] = {}
_clients_lock = threading.Lock()


def _client(
    region: str | None, endpoint_url: str | None, connect: float, read: float
) -> BedrockRuntimeClient:
    """One client per configuration and process (boto3 clients are thread-safe; making one is slow)."""
    key = (region, endpoint_url, connect, read)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            import boto3

            config = Config(
                connect_timeout=connect,
                read_timeout=read,  # the longest silence inside a stream, as for the other providers
                retries={"total_max_attempts": 1},  # Retrying retries, and only before the first event
                max_pool_connections=50,
                tcp_keepalive=True,
            )
            # a session of its own: boto3's default session is not thread-safe
            client = boto3.session.Session().client(
                "bedrock-runtime", region_name=region, endpoint_url=endpoint_url, config=config
            )
            _clients[key] = client
    return client


async def create(settings: Settings) -> BedrockProvider:
    """The provider with the process's client for this configuration (made in a thread the first time)."""
    client = await asyncio.to_thread(
        _client,
        settings.aws_region,
        settings.bedrock_endpoint_url,
        settings.upstream_connect_timeout,
        settings.upstream_read_timeout,
    )
    return BedrockProvider(client)
