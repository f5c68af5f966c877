"""What the providers that speak HTTP through httpx share: one client per event loop, error bodies.

Calls share one ``httpx.AsyncClient`` per event loop (``shared_client``), so a run's second model call,
and the next run's, reuse the kept-alive connection instead of paying a new TCP and TLS handshake,
whichever httpx provider (``openai``, ``anthropic``, a named endpoint) makes them. A client is never
shared across loops: its connections belong to the loop that opened them, and the Lambda buffered
path, uvicorn and the tests each run loops of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import weakref
from functools import cache
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import unquote, urlsplit

import httpx

from agentstream.errors import UpstreamError, UpstreamTimeout

if TYPE_CHECKING:
    import ssl
    from collections.abc import AsyncIterator, Callable

    from pydantic import SecretStr

    from agentstream.core.providers.base import EndpointAccess

__all__ = [
    "UpstreamAccess",
    "check_stream_response",
    "error_detail",
    "excerpt",
    "read_error_body",
    "read_to_the_end",
    "redactor",
    "shared_client",
    "transport_error",
    "upstream_access",
    "warm_up",
]

_EXCERPT_CHARS = 200
_ERROR_BODY_BYTES = 16_384
# How long the end of a body may take once the stream said it is complete (it normally comes at once).
_END_SECONDS = 0.25
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


@cache
def _ssl_context() -> ssl.SSLContext:
    """Built once: loading the CA bundle costs tens of milliseconds, too much for every model call."""
    return httpx.create_ssl_context()


async def read_to_the_end(chunks: AsyncIterator[bytes]) -> None:
    """Read what follows the end of a stream: a connection whose response was not read to its end is
    closed, not reused. A server that keeps the body open does not hold up the step; its connection
    is closed."""
    with contextlib.suppress(TimeoutError, httpx.HTTPError):
        async with asyncio.timeout(_END_SECONDS):
            async for _ in chunks:
                pass


async def read_error_body(response: httpx.Response) -> str:
    """The start of an error response's body, as text (never more than 16 KB are read)."""
    body = bytearray()
    async for data in response.aiter_bytes():
        body += data
        if len(body) >= _ERROR_BODY_BYTES:
            break
    return body.decode("utf-8", errors="replace")


async def check_stream_response(response: httpx.Response, redact: Callable[[str], str], *, name: str) -> None:
    """Raise for HTTP errors (the contract's codes), and for a JSON answer where a stream was asked for;
    the upstream is called by its ``name`` (the provider, or the operator's endpoint name)."""
    content_type = response.headers.get("content-type", "")
    if response.is_success and not content_type.startswith("application/json"):
        return
    detail, kind = error_detail(await read_error_body(response))
    detail = redact(detail)
    if not response.is_success:
        # (its patterns are compiled on the first failure, not at start-up)
        from agentstream.core.providers._errors import classify, retry_after

        status = response.status_code
        raise classify(
            f"the model API ({name}) answered HTTP {status}: {detail or response.reason_phrase}",
            status=status,
            kind=kind,
            detail=detail,
            retry_after=retry_after(response.headers),
        )
    raise UpstreamError(f"the model API ({name}) answered JSON instead of an event stream: {detail}")


def error_detail(text: str) -> tuple[str, str]:
    """(message, kind) of an error body: the upstream's own message and its error type or code.

    Knows ``{"error": {"message", "type", "code"}}`` (OpenAI, Anthropic, Zhipu, DeepSeek),
    ``{"error": "..."}`` (Ollama, llama.cpp), ``{"message"}`` (vLLM, AWS), ``{"detail": str or
    [{"msg"}]}`` (FastAPI servers); anything else is shown as an excerpt.
    """
    try:
        payload = json.loads(text)
    except ValueError:
        return excerpt(text), ""
    return message_of(payload) or excerpt(text), kind_of(payload)


def message_of(payload: Any) -> str:
    if isinstance(payload, list) and payload:
        return message_of(payload[0])
    if not isinstance(payload, dict):
        return ""
    for key in ("error", "message", "detail", "msg"):
        value = payload.get(key)
        if isinstance(value, str) and value:
            return excerpt(value)
        nested = message_of(value) if isinstance(value, dict | list) else ""
        if nested:
            return nested
    return ""


def kind_of(payload: Any) -> str:
    """The error's type and code, as one string (``"invalid_request_error context_length_exceeded"``)."""
    if not isinstance(payload, dict):
        return ""
    error = payload.get("error")
    source = error if isinstance(error, dict) else payload
    parts = [source.get(key) for key in ("type", "code")]
    return " ".join(str(part) for part in parts if isinstance(part, str | int) and part != "error")


def excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _EXCERPT_CHARS else flat[: _EXCERPT_CHARS - 1] + "…"


_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s\"'<>]+", re.IGNORECASE)
# Parts of an address shorter than this are not looked for in texts (they would match everywhere).
_SHORTEST_SECRET = 4
REDACTED = "[redacted]"


def redactor(url: str, *secrets: str | None) -> Callable[[str], str]:
    """A function that takes out of a text what users and logs must never see: the ``secrets`` (keys),
    any URL, and every part of the upstream's address ``url`` an error may quote (its host and port,
    user name and password, percent-encoded or not). Errors name an upstream by its configured name."""
    parts = urlsplit(url)
    needles = {url, parts.netloc, unquote(parts.netloc), *(s for s in secrets if s)}
    host, _, _ = parts.netloc.rpartition("@")[2].partition(":")
    userinfo = parts.netloc.rpartition("@")[0]
    for part in (parts.hostname, host, parts.netloc.rpartition("@")[2], userinfo, *userinfo.split(":")):
        if part:
            needles |= {part, unquote(part)}
    ordered = sorted((n for n in needles if len(n) >= _SHORTEST_SECRET), key=len, reverse=True)

    def redact(text: str) -> str:
        text = _URL.sub(REDACTED, text)
        for needle in ordered:
            if needle in text:
                text = text.replace(needle, REDACTED)
        return text

    return redact


def transport_error(
    exc: httpx.HTTPError | httpx.InvalidURL, *, name: str, redact: Callable[[str], str]
) -> UpstreamError:
    """The error for a request that failed below HTTP: could not connect, timed out, connection lost.

    The upstream is named by ``name`` (the provider, or the operator's endpoint name), never by its
    address; httpx's own messages may quote the URL, so they are not shown, only the failure's kind.
    Failing to connect, or losing the connection, is worth another try (if nothing was streamed yet);
    a read timeout is not: the upstream already took the whole read timeout to say nothing.
    """
    if isinstance(exc, httpx.ConnectTimeout):
        return UpstreamTimeout(f"timed out connecting to the model API ({name})", retryable=True)
    if isinstance(exc, httpx.ReadTimeout):
        return UpstreamTimeout(f"the model API ({name}) stopped sending (read timeout)")
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"the model API request ({name}) timed out")
    if isinstance(exc, httpx.ConnectError):
        return UpstreamError(f"could not connect to the model API ({name})", retryable=True)
    if isinstance(exc, httpx.RemoteProtocolError):
        return UpstreamError(
            "the model API closed the connection before the reply was complete", retryable=True
        )
    return UpstreamError(
        redact(f"the model API request ({name}) failed: {type(exc).__name__}"), retryable=True
    )


class UpstreamAccess(NamedTuple):
    """Where an httpx provider sends its requests, with which key, and how its errors name it."""

    base_url: str
    api_key: str | None
    name: str


async def upstream_access(
    provider: str,
    endpoint: EndpointAccess | None,
    *,
    base_url: str,
    api_key: SecretStr | None,
    api_key_secret_id: str | None,
) -> UpstreamAccess:
    """A named endpoint's URL and key (errors name the endpoint), else the provider's own from the
    settings (the key from the environment, else its Secrets Manager secret; errors name the provider)."""
    if endpoint is not None:
        return UpstreamAccess(endpoint.base_url, endpoint.api_key, f"endpoint {endpoint.name!r}")
    from agentstream.secrets import key_from

    return UpstreamAccess(base_url, await key_from(api_key, api_key_secret_id), provider)
