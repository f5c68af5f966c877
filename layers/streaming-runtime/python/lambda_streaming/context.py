"""One invocation as the Runtime API announces it, and the context object handed to the handler."""

from __future__ import annotations

import contextvars
import json
import os
import time
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ClientContext",
    "CognitoIdentity",
    "Invocation",
    "LambdaContext",
    "current_invocation",
    "trace_id",
]


@dataclass(frozen=True)
class Invocation:
    """The headers and body of one `/runtime/invocation/next` answer."""

    request_id: str
    deadline_ms: int
    invoked_function_arn: str
    trace_id: str | None
    client_context: str | None
    cognito_identity: str | None
    body: bytes

    @classmethod
    def from_next(cls, headers: dict[str, str], body: bytes) -> Invocation:
        """Build from `/next` response headers (keys lower-cased)."""
        request_id = headers.get("lambda-runtime-aws-request-id")
        if not request_id:
            raise ValueError("the Runtime API sent an invocation without Lambda-Runtime-Aws-Request-Id")
        return cls(
            request_id=request_id,
            deadline_ms=int(headers.get("lambda-runtime-deadline-ms", "0")),
            invoked_function_arn=headers.get("lambda-runtime-invoked-function-arn", ""),
            trace_id=headers.get("lambda-runtime-trace-id"),
            client_context=headers.get("lambda-runtime-client-context"),
            cognito_identity=headers.get("lambda-runtime-cognito-identity"),
            body=body,
        )


current_invocation: contextvars.ContextVar[Invocation] = contextvars.ContextVar("lambda_invocation")
"""The invocation being served by the current task (each invocation runs in its own context)."""


def trace_id() -> str | None:
    """The X-Ray trace id of the invocation this code runs for.

    Use this rather than ``os.environ["_X_AMZN_TRACE_ID"]``: with several invocation slots the runtime
    leaves that process-wide variable unset, because it cannot hold one id per concurrent invocation.
    Outside an invocation (at init, on a thread the handler did not start) it falls back to the variable.
    """
    invocation = current_invocation.get(None)
    if invocation is not None:
        return invocation.trace_id
    return os.environ.get("_X_AMZN_TRACE_ID")


class CognitoIdentity:
    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")

    def __init__(self, data: dict[str, Any] | None) -> None:
        data = data or {}
        self.cognito_identity_id: str | None = data.get("cognitoIdentityId")
        self.cognito_identity_pool_id: str | None = data.get("cognitoIdentityPoolId")


class ClientContext:
    __slots__ = ("client", "custom", "env")

    def __init__(self, data: dict[str, Any]) -> None:
        self.client: Any = data.get("client")
        self.custom: Any = data.get("custom")
        self.env: Any = data.get("env")


class LambdaContext:
    """The attributes of the managed runtime's context, plus ``response_streaming = True``.

    ``response_streaming`` tells a handler that it may answer with an async iterator (see the README).
    """

    response_streaming = True

    def __init__(self, invocation: Invocation) -> None:
        self.aws_request_id = invocation.request_id
        self.invoked_function_arn = invocation.invoked_function_arn
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = CognitoIdentity(_json_header(invocation.cognito_identity))
        client_context = _json_header(invocation.client_context)
        self.client_context = ClientContext(client_context) if client_context is not None else None
        self.xray_trace_id = invocation.trace_id
        self._deadline_ms = invocation.deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(self._deadline_ms - int(time.time() * 1000), 0)

    def __repr__(self) -> str:
        return (
            f"LambdaContext(aws_request_id={self.aws_request_id!r}, function_name={self.function_name!r}, "
            f"invoked_function_arn={self.invoked_function_arn!r})"
        )


def _json_header(value: str | None) -> dict[str, Any] | None:
    if not value:
        return None
    data = json.loads(value)
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object in a Runtime API context header")
    return data
