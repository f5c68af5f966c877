"""The one error hierarchy of agentstream.

Every error that can reach a user carries a stable ``code``, a human ``message`` and the HTTP
``status`` an adapter should answer with. Adapters turn these into ``{"error": {"code", "message"}}``
bodies or SSE ``error`` events; nothing else (stack traces, upstream bodies with secrets) leaks out.
"""

from __future__ import annotations

__all__ = [
    "AgentStreamError",
    "BadRequest",
    "Conflict",
    "ContextLengthExceeded",
    "Forbidden",
    "ModelNotFound",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "SecretUnavailable",
    "StoreUnavailable",
    "Unauthorized",
    "UpstreamAuthError",
    "UpstreamError",
    "UpstreamRateLimited",
    "UpstreamTimeout",
]


class AgentStreamError(Exception):
    """Base class: an error with a code, a message and an HTTP status."""

    code: str = "internal_error"
    status: int = 500

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class BadRequest(AgentStreamError):
    """The request is well-formed HTTP but its content is not acceptable."""

    code = "invalid_request"
    status = 422


class Unauthorized(AgentStreamError):
    code = "unauthorized"
    status = 401


class Forbidden(AgentStreamError):
    code = "forbidden"
    status = 403


class NotFound(AgentStreamError):
    code = "not_found"
    status = 404


class Conflict(AgentStreamError):
    code = "conflict"
    status = 409


class PayloadTooLarge(AgentStreamError):
    """What the caller sent is more than the service accepts: a request body over
    ``AGENTSTREAM_MAX_BODY_BYTES``, or a record over what one DynamoDB item holds (400 KB)."""

    code = "payload_too_large"
    status = 413


class RateLimited(AgentStreamError):
    """The tenant is over one of its limits (runs per minute, concurrent runs): try again later.

    ``retry_after``: the seconds to wait before trying again (the adapters send it as Retry-After).
    """

    code = "rate_limited"
    status = 429

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StoreUnavailable(AgentStreamError):
    """The data store failed after retries (throttling, network)."""

    code = "store_unavailable"
    status = 503


class SecretUnavailable(AgentStreamError):
    """A secret (the admin key, a provider key) could not be read from Secrets Manager."""

    code = "secret_unavailable"
    status = 503


class UpstreamError(AgentStreamError):
    """The model provider failed: HTTP error, malformed stream, dropped connection.

    ``retryable``: trying the same request again may work (throttling, overload, a 5xx, a connection
    that failed before any answer); providers retry those only before anything was streamed.
    ``retry_after``: the seconds the provider asked to wait before trying again, when it said.
    """

    code = "upstream_error"
    status = 502

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
        code: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message, code=code, status=status)
        self.retryable = retryable
        self.retry_after = retry_after


class UpstreamTimeout(UpstreamError):
    code = "upstream_timeout"
    status = 504


class UpstreamAuthError(UpstreamError):
    """The provider refused our credentials (a wrong or missing key, no access to the model)."""

    code = "upstream_auth"
    status = 502


class UpstreamRateLimited(UpstreamError):
    """The provider throttled the request (HTTP 429, a throttling exception)."""

    code = "rate_limited"
    status = 429


class ContextLengthExceeded(UpstreamError):
    """The conversation does not fit the model's context window."""

    code = "context_length_exceeded"
    status = 400


class ModelNotFound(UpstreamError):
    """The provider does not know the agent's ``model.name`` (or offers it to nobody here)."""

    code = "model_not_found"
    status = 502
