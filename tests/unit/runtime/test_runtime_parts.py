"""Pieces of the streaming-runtime layer that are easier to pin down in-process."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import pytest

from lambda_streaming.context import Invocation, LambdaContext
from lambda_streaming.runtime import InitError, load_handler, pad_sse

if TYPE_CHECKING:
    from pathlib import Path


IDENTITY = {"cognitoIdentityId": "i", "cognitoIdentityPoolId": "p"}


def invocation(**headers: str) -> Invocation:
    return Invocation.from_next(
        {
            "lambda-runtime-aws-request-id": "req-1",
            "lambda-runtime-deadline-ms": str(int(time.time() * 1000) + 5_000),
            "lambda-runtime-invoked-function-arn": "arn:aws:lambda:us-east-1:123456789012:function:f",
            **headers,
        },
        b"{}",
    )


def test_context_counts_down_to_the_deadline_and_never_below_zero() -> None:
    context = LambdaContext(invocation())
    assert 4_000 < context.get_remaining_time_in_millis() <= 5_000
    assert (
        LambdaContext(invocation(**{"lambda-runtime-deadline-ms": "1000"})).get_remaining_time_in_millis()
        == 0
    )


def test_context_reads_identity_and_client_context_headers() -> None:
    context = LambdaContext(
        invocation(
            **{
                "lambda-runtime-cognito-identity": json.dumps(
                    {"cognitoIdentityId": "i", "cognitoIdentityPoolId": "p"}
                ),
                "lambda-runtime-client-context": json.dumps({"custom": {"a": 1}, "env": {"b": 2}}),
            }
        )
    )
    assert (context.identity.cognito_identity_id, context.identity.cognito_identity_pool_id) == ("i", "p")
    assert context.client_context is not None
    assert (context.client_context.custom, context.client_context.env) == ({"a": 1}, {"b": 2})
    assert context.response_streaming is True


def test_an_invocation_needs_a_request_id() -> None:
    with pytest.raises(ValueError, match="Request-Id"):
        Invocation.from_next({}, b"{}")


@pytest.mark.parametrize(
    ("chunk", "size", "expected"),
    [
        (b"data: 1\n\n", 16, b"data: 1\n\n:     \n"),
        (b"data: 1\n\n", 11, b"data: 1\n\n:\n"),
        (b"data: 1\n\n", 10, b"data: 1\n\n"),  # no room for a comment line: unchanged, never cut
        (b"data: partial", 64, b"data: partial"),  # not at a line end: a comment would corrupt the line
        (b"data: 1\r", 64, b"data: 1\r"),  # a lone CR may be half of a CRLF
    ],
)
def test_sse_padding_only_appends_whole_comment_lines(chunk: bytes, size: int, expected: bytes) -> None:
    assert pad_sse(chunk, size) == expected


def test_load_handler_puts_the_task_root_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path / "elsewhere"))
    (tmp_path / "my_task_handler.py").write_text("def handler(event, context):\n    return 'ok'\n")
    handler = load_handler("my_task_handler.handler", str(tmp_path))
    assert handler({}, None) == "ok"


def test_syntax_errors_are_reported_as_such(tmp_path: Path) -> None:
    (tmp_path / "broken_task_handler.py").write_text("def handler(:\n")
    with pytest.raises(InitError) as caught:
        load_handler("broken_task_handler.handler", str(tmp_path))
    assert caught.value.error_type == "Runtime.UserCodeSyntaxError"


def test_trace_id_is_the_current_invocations_else_the_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import contextvars

    from lambda_streaming import current_invocation, trace_id

    monkeypatch.setenv("_X_AMZN_TRACE_ID", "Root=1-env")
    assert trace_id() == "Root=1-env"  # outside any invocation (init, a thread of one's own)

    def inside(value: str | None) -> str | None:
        headers = {"lambda-runtime-trace-id": value} if value else {}
        current_invocation.set(invocation(**headers))
        return trace_id()

    assert contextvars.Context().run(inside, "Root=1-mine") == "Root=1-mine"
    # An invocation without a trace id has none, whatever the process-wide variable says.
    assert contextvars.Context().run(inside, None) is None
    assert trace_id() == "Root=1-env"
