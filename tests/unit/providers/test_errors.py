"""One mapping of provider failures to the contract's codes, and Retry-After."""

from __future__ import annotations

import email.utils
import time

import pytest

from agentstream.core.providers._errors import classify, retry_after


@pytest.mark.parametrize(
    ("status", "kind", "message", "code", "retryable"),
    [
        (401, "authentication_error", "invalid x-api-key", "upstream_auth", False),
        (403, "permission_error", "no access", "upstream_auth", False),
        (429, "rate_limit_error", "slow down", "rate_limited", True),
        (
            400,
            "invalid_request_error",
            "prompt is too long: 210000 tokens > 200000 maximum",
            "context_length_exceeded",
            False,
        ),
        (
            400,
            "context_length_exceeded",
            "This model's maximum context length is 8192 tokens",
            "context_length_exceeded",
            False,
        ),
        (
            400,
            "exceed_context_size_error",
            "the request exceeds the available context size",
            "context_length_exceeded",
            False,
        ),
        (404, "model_not_found", "The model `gpt-9` does not exist", "model_not_found", False),
        (404, "not_found_error", "model: claude-nope", "model_not_found", False),
        (404, "", "model 'llama9' not found", "model_not_found", False),
        (400, "1211", "模型不存在，请检查模型代码。", "model_not_found", False),
        (404, "", "Not Found", "upstream_error", False),
        (400, "invalid_request_error", "max_tokens: must be positive", "upstream_error", False),
        (500, "api_error", "Internal server error", "upstream_error", True),
        (529, "overloaded_error", "Overloaded", "upstream_error", True),
        (504, "timeout_error", "upstream took too long", "upstream_timeout", True),
        # mid-stream error events: no status, the error's type decides
        (None, "overloaded_error", "Overloaded", "upstream_error", True),
        (None, "rate_limit_error", "Rate limited", "rate_limited", True),
        (None, "authentication_error", "bad key", "upstream_auth", False),
        (None, "invalid_request_error", "prompt is too long", "context_length_exceeded", False),
        (None, "", "content filter triggered", "upstream_error", False),
    ],
)
def test_classify(status: int | None, kind: str, message: str, code: str, retryable: bool) -> None:
    error = classify(message, status=status, kind=kind)
    assert (error.code, error.retryable, error.message) == (code, retryable, message)


def test_a_rate_limit_keeps_its_retry_after() -> None:
    assert classify("429", status=429, retry_after=7.0).retry_after == 7.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "12"}, 12.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-3"}, 0.0),
    ],
)
def test_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after(headers) == expected


def test_retry_after_as_an_http_date() -> None:
    value = email.utils.formatdate(time.time() + 30, usegmt=True)
    seconds = retry_after({"retry-after": value})
    assert seconds is not None
    assert 28 <= seconds <= 30
