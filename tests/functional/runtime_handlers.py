"""Handlers that the streaming runtime loads from a temporary LAMBDA_TASK_ROOT in the functional tests.

``handler`` dispatches on ``event["kind"]``; body chunks carry ``time.monotonic()`` taken when they are
yielded, so the tests can measure how long each one took to reach the emulated Runtime API.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


def handler(event: dict[str, Any], context: Any) -> Any:
    return KINDS[event["kind"]](event, context)


def _prelude(content_type: str = "text/plain") -> dict[str, Any]:
    return {"statusCode": 200, "headers": {"content-type": content_type}, "cookies": []}


def plain(event: dict[str, Any], context: Any) -> Any:
    return {"echo": event, "request_id": context.aws_request_id}


def describe_context(event: dict[str, Any], context: Any) -> Any:
    return {
        "aws_request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "response_streaming": context.response_streaming,
        "identity": context.identity.cognito_identity_id,
        "client_custom": context.client_context.custom if context.client_context else None,
        "trace_env": os.environ.get("_X_AMZN_TRACE_ID"),
        "thread": threading.current_thread().name,
    }


async def _async_plain(event: dict[str, Any], context: Any) -> Any:
    await asyncio.sleep(0)
    return {"async": True, "request_id": context.aws_request_id}


def raise_early(event: dict[str, Any], context: Any) -> Any:
    raise ValueError("boom before the first byte")


def stream(event: dict[str, Any], context: Any) -> AsyncIterator[Any]:
    async def body() -> AsyncIterator[Any]:
        yield _prelude(event.get("content_type", "text/plain"))
        for number in range(event.get("chunks", 5)):
            await asyncio.sleep(event.get("interval", 0.2))
            yield event.get("template", "{n}:{t}\n").format(n=number, t=time.monotonic()).encode()

    return body()


def stream_then_raise(event: dict[str, Any], context: Any) -> AsyncIterator[Any]:
    async def body() -> AsyncIterator[Any]:
        yield _prelude()
        yield b"partial"
        raise RuntimeError("boom mid-stream")

    return body()


def stream_raise_before_prelude(event: dict[str, Any], context: Any) -> AsyncIterator[Any]:
    async def body() -> AsyncIterator[Any]:
        await asyncio.sleep(0)
        raise KeyError("no prelude")
        yield _prelude()  # pragma: no cover - makes this an async generator

    return body()


def stream_empty_chunks(event: dict[str, Any], context: Any) -> AsyncIterator[Any]:
    async def body() -> AsyncIterator[Any]:
        yield _prelude()
        yield b""
        yield b"after an empty chunk"

    return body()


def stream_until_closed(event: dict[str, Any], context: Any) -> AsyncIterator[Any]:
    """Streams forever; its ``finally`` leaves a marker file, proving the runtime closed it."""

    async def body() -> AsyncIterator[Any]:
        try:
            yield _prelude()
            while True:
                yield b"tick\n"
                await asyncio.sleep(0.01)
        finally:
            _mark_closed(event["marker"])

    return body()


def trace(event: dict[str, Any], context: Any) -> Any:
    """The trace id as the handler's thread sees it, then again on the loop after a pause."""
    from lambda_streaming import trace_id

    on_thread = trace_id()

    async def later() -> Any:
        await asyncio.sleep(event.get("pause", 0.05))
        return {
            "seen": [on_thread, trace_id()],
            "env": os.environ.get("_X_AMZN_TRACE_ID"),
            "request_id": context.aws_request_id,
        }

    return later()


def block(event: dict[str, Any], context: Any) -> Any:
    """A synchronous handler that holds its thread."""
    time.sleep(event["seconds"])
    return {"blocked": event["seconds"]}


def _mark_closed(path: str) -> None:
    Path(path).write_text("closed")


KINDS = {
    "plain": plain,
    "context": describe_context,
    "async": _async_plain,
    "raise_early": raise_early,
    "stream": stream,
    "stream_then_raise": stream_then_raise,
    "stream_raise_before_prelude": stream_raise_before_prelude,
    "stream_empty_chunks": stream_empty_chunks,
    "stream_until_closed": stream_until_closed,
    "trace": trace,
    "block": block,
}
