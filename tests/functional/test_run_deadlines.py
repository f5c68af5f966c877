"""The Lambda deadline against a slow store: ``done`` still reaches the client before the function dies.

The app runs in-process behind the response-streaming handler (``make_handler(app)``) with a function URL
event and a context whose remaining time counts down from 4 s, as Lambda's does; DynamoDB is moto's
server, reached through a client whose every call is delayed by botocore event hooks
(tests/support/store_faults.py). Only the handler, env vars and the wire are used.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agentstream.config import get_settings
from agentstream.handlers.stream import make_handler
from agentstream.store import create_table
from tests.conftest import ADMIN_KEY, load_event
from tests.support.cluster import MotoServer
from tests.support.server import parse_sse_block
from tests.support.store_faults import StoreFaults, install
from tests.unit.handlers.lambda_contexts import StreamingContext

REMAINING_MS = 4_000
LATENCY_S = 0.7  # per store call


class CountdownContext(StreamingContext):
    """A streaming invocation's context whose remaining time runs out ``remaining_ms`` after creation."""

    def __init__(self, remaining_ms: int) -> None:
        self.deadline = time.monotonic() + remaining_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


@pytest.fixture
def moto_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    moto = MotoServer().start()
    try:
        create_table("deadlines", moto.client())
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", moto.endpoint)
        monkeypatch.setenv("AGENTSTREAM_TABLE", "deadlines")
        monkeypatch.setenv("AGENTSTREAM_ADMIN_KEY", ADMIN_KEY)
        get_settings.cache_clear()
        yield moto.endpoint
    finally:
        moto.stop()


def _event(method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    event = load_event("function_url_v2.json")
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    event["rawQueryString"] = ""
    event.pop("queryStringParameters", None)
    event["headers"]["authorization"] = f"Bearer {ADMIN_KEY}"
    event["body"] = json.dumps(body, ensure_ascii=False)
    return event


async def _invoke(
    handler: Any, event: dict[str, Any], context: Any
) -> tuple[int, list[tuple[int, dict[str, Any], float]]]:
    """Status and the SSE events (id, data, monotonic arrival) of one streamed invocation, read to its end."""
    status = 0
    events: list[tuple[int, dict[str, Any], float]] = []
    buffer = b""
    async for item in handler(event, context):
        if isinstance(item, dict):
            status = int(item["statusCode"])
            continue
        buffer += item
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            event_id, data, _ = parse_sse_block(block)
            if data is not None:
                events.append(
                    (int(event_id) if event_id is not None else -1, json.loads(data), time.monotonic())
                )
    if buffer.strip() and not events:  # a plain JSON answer
        events.append((-1, json.loads(buffer), time.monotonic()))
    return status, events


@pytest.mark.slow
def test_a_slow_store_still_gets_done_to_the_client_before_the_lambda_deadline(moto_endpoint: str) -> None:
    from agentstream.web.app import create_app

    faults = StoreFaults()
    undo = install(faults)
    try:
        handler = make_handler(create_app())
        reply = "存储很慢，Lambda 截止之前仍然收到 done。" * 15  # 10 s of text

        async def scenario() -> tuple[float, int, list[tuple[int, dict[str, Any], float]]]:
            model = {
                "provider": "scripted",
                "name": "s",
                "options": {"reply": reply, "delta_chars": 3, "delay_ms": 100},
            }
            status, created = await _invoke(
                handler,
                _event("POST", "/api/v1/agents", {"name": "slow", "model": model}),
                StreamingContext(),
            )
            assert status == 201, created
            agent = created[0][1]["data"]["id"]
            faults.latency_s = LATENCY_S  # from now on, every store call is slow
            context = CountdownContext(REMAINING_MS)
            chat = _event("POST", f"/api/v1/agents/{agent}/chat/stream", {"message": "go"})
            status, events = await asyncio.wait_for(_invoke(handler, chat, context), 30)
            # let what the app still does in the background finish on this loop
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            if others:
                await asyncio.wait(others, timeout=15)
            return context.deadline, status, events

        deadline, status, events = asyncio.run(scenario())
    finally:
        undo()

    assert faults.delayed > 0
    assert status == 200
    ids = [i for i, _, _ in events]
    assert ids == list(range(len(ids)))
    types = [e["chunk_type"] for _, e, _ in events]
    assert types.count("done") == 1
    assert types[-1] == "done", types
    _, done, done_at = events[-1]
    assert done_at < deadline, f"done came {done_at - deadline:.2f} s after the Lambda deadline"
    assert done["status"] == "timeout"
    assert done["final_response"] == "".join(
        e["content"] for _, e, _ in events if e["chunk_type"] == "content"
    )
