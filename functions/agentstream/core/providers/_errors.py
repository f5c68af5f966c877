"""One mapping from provider failures to the contract's error codes, shared by every provider.

Providers describe a failure by what they know of it (an HTTP status, the upstream's error type or
code, its message) and ``classify`` picks the error: ``upstream_auth``, ``rate_limited``,
``context_length_exceeded``, ``model_not_found``, ``upstream_timeout`` or ``upstream_error``, and
whether trying again may help. Messages must already be safe to show (keys redacted).
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

from agentstream.errors import (
    ContextLengthExceeded,
    ModelNotFound,
    UpstreamAuthError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["CONTEXT_TOO_LONG", "classify", "retry_after"]

# What providers say when the prompt does not fit: OpenAI, vLLM and DeepSeek ("maximum context length"),
# Anthropic ("prompt is too long"), Bedrock ("Input is too long", "too many input tokens"), llama.cpp
# ("exceeds the available context size"), Zhipu ("超过最大长度").
CONTEXT_TOO_LONG = re.compile(
    r"context[_ ]?(length|window|size)|maximum context|prompt is too long|input is too long"
    r"|too many (input )?tokens|exceeds? the (available )?context|超过最大长度",
    re.IGNORECASE,
)
# OpenAI ("The model `x` does not exist"), Ollama ("model 'x' not found"), DeepSeek ("Model Not Exist"),
# Zhipu ("模型不存在"), Bedrock ("The provided model identifier is invalid").
_NO_SUCH_MODEL = re.compile(
    r"model\b.*\b(not[ _]?found|does not exist|not exist|unknown|invalid|identifier)"
    r"|(unknown|invalid|no such) model|model_not_found|模型不存在",
    re.IGNORECASE,
)
_AUTH = re.compile(r"auth|permission|api[_ ]?key|forbidden|unauthori[sz]ed|access[_ ]?denied", re.IGNORECASE)
_RATE = re.compile(r"rate[_ ]?limit|throttl|too many requests", re.IGNORECASE)
_OVERLOADED = re.compile(r"overloaded|unavailable|internal|server[_ ]error|api_error", re.IGNORECASE)
_TIMEOUT = re.compile(r"timeout|timed out", re.IGNORECASE)


def classify(
    message: str,
    *,
    status: int | None = None,
    kind: str = "",
    detail: str | None = None,
    retry_after: float | None = None,
) -> UpstreamError:
    """The error for a failure: an HTTP ``status`` if there was one, else the upstream's own error
    ``kind`` (its type or code, e.g. from a mid-stream error event), and what it said (``detail``,
    by default the whole ``message``, which becomes the error's message)."""
    detail = message if detail is None else detail
    said = f"{kind} {detail}"
    # Anthropic's only resource under /v1/messages is the model: its 404 says "model: <name>".
    no_such_model = _NO_SUCH_MODEL.search(said) or ("not_found" in kind and "model" in detail.lower())
    if status in (401, 403) or (status is None and _AUTH.search(kind)):
        return UpstreamAuthError(message)
    if status == 429 or (status is None and _RATE.search(kind)):
        return UpstreamRateLimited(message, retryable=True, retry_after=retry_after)
    if CONTEXT_TOO_LONG.search(said) and (status is None or 400 <= status < 500):
        return ContextLengthExceeded(message)
    if status in (400, 404, None) and no_such_model:
        return ModelNotFound(message)
    if status in (408, 504) or (status is None and _TIMEOUT.search(kind)):
        return UpstreamTimeout(message, retryable=True, retry_after=retry_after)
    if (status is not None and status >= 500) or (status is None and _OVERLOADED.search(kind)):
        return UpstreamError(message, retryable=True, retry_after=retry_after)
    return UpstreamError(message)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date), if given."""
    if (millis := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    import email.utils  # an HTTP date: rare, and the email package is not otherwise needed

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
