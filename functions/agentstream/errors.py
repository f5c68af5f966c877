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
    "Forbidden",
    "NotFound",
    "StoreUnavailable",
    "Unauthorized",
    "UpstreamError",
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


class StoreUnavailable(AgentStreamError):
    """The data store failed after retries (throttling, network)."""

    code = "store_unavailable"
    status = 503


class UpstreamError(AgentStreamError):
    """The model provider failed: HTTP error, malformed stream, dropped connection."""

    code = "upstream_error"
    status = 502


class UpstreamTimeout(UpstreamError):
    code = "upstream_timeout"
    status = 504
