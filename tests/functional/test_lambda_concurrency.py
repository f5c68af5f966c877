"""Many streamed chats at once through ONE runtime process running the real handler (Lambda Managed
Instances): every stream exact and complete, nothing crossing between them, and a failing, a timing-out
and an erroring invocation among them change nothing for the others. DynamoDB is moto's server (it
answers one request at a time, which moto needs under concurrent writes)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentstream.store import create_table
from tests.conftest import ADMIN_KEY, load_event
from tests.functional.runtime_api_emulator import Result, RuntimeApiEmulator
from tests.functional.test_streaming_runtime import WAIT, answer, runtime
from tests.support.cluster import MotoServer
from tests.support.server import parse_sse_block

pytestmark = pytest.mark.anyio

HANDLER = "agentstream.handlers.stream.handler"
TABLE = "lmi"


@pytest.fixture
def moto() -> Iterator[MotoServer]:
    server = MotoServer().start()
    try:
        create_table(TABLE, server.client())
        yield server
    finally:
        server.stop()


def http_event(method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    event = load_event("function_url_v2.json")
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    event["rawQueryString"] = ""
    event.pop("queryStringParameters", None)
    event["headers"]["authorization"] = f"Bearer {ADMIN_KEY}"
    event["body"] = json.dumps(body, ensure_ascii=False)
    return event


def sse_events(result: Result) -> list[tuple[int, dict[str, Any]]]:
    events = []
    for block in result.streamed_body.split(b"\n\n"):
        event_id, data, _ = parse_sse_block(block)
        if data is not None:
            events.append((int(event_id) if event_id is not None else -1, json.loads(data)))
    return events


def reply_of(n: int) -> str:
    # Different lengths and scripts, so that a chunk in the wrong stream cannot go unnoticed.
    return f"第{n}号回答 (reply {n}): " + f"token-{n} " * (8 + n % 5) + "🙂 fin."


async def create_agent(emulator: RuntimeApiEmulator, name: str, options: dict[str, Any]) -> str:
    model = {"provider": "scripted", "name": "s", "options": options}
    body = {"name": name, "model": model}
    result = await answer(emulator.invoke(http_event("POST", "/api/v1/agents", body)))
    assert result.prelude is not None
    assert result.prelude["statusCode"] == 201, result.streamed_body
    agent_id: str = json.loads(result.streamed_body)["data"]["id"]
    return agent_id


@pytest.mark.parametrize("streams", [32, 64])
async def test_one_process_streams_many_chats_with_no_cross_talk(
    tmp_path: Path, moto: MotoServer, streams: int
) -> None:
    env = {
        "AWS_ENDPOINT_URL_DYNAMODB": moto.endpoint,
        "AGENTSTREAM_TABLE": TABLE,
        "AGENTSTREAM_ADMIN_KEY": ADMIN_KEY,
        "AWS_LAMBDA_MAX_CONCURRENCY": str(streams + 3),
        # one tenant's chats, all at once: its limits are on, but out of reach
        "AGENTSTREAM_MAX_CONCURRENT_RUNS": str(streams + 3),
        "AGENTSTREAM_RATE_LIMIT_PER_MINUTE": str(2 * (streams + 3)),
    }
    async with (
        RuntimeApiEmulator() as emulator,
        runtime(emulator, tmp_path, handler=HANDLER, env=env) as running,
    ):
        agents = await asyncio.gather(
            *(
                create_agent(emulator, f"a{n}", {"reply": reply_of(n), "delta_chars": 4, "delay_ms": 30})
                for n in range(streams)
            )
        )
        failing_agent = await create_agent(emulator, "fails", {"reply": "x" * 40, "fail_after": 3})
        stalling_agent = await create_agent(emulator, "stalls", {"reply": "y" * 40, "stall_after": 2})

        chats = [
            emulator.invoke(
                http_event(
                    "POST",
                    f"/api/v1/agents/{agent}/chat/stream",
                    {"message": f"hello {n}", "session_id": f"session-{n}"},
                ),
                trace_id=f"Root=1-65f0a1b2-{n:024x}",
            )
            for n, agent in enumerate(agents)
        ]
        failing = emulator.invoke({"not": "an HTTP event"})
        erroring = emulator.invoke(
            http_event("POST", f"/api/v1/agents/{failing_agent}/chat/stream", {"message": "go"})
        )
        timing_out = emulator.invoke(
            http_event("POST", f"/api/v1/agents/{stalling_agent}/chat/stream", {"message": "go"}),
            deadline_ms=int((time.time() + 3.0) * 1000),
        )
        async with asyncio.timeout(WAIT * 2):
            results = await asyncio.gather(*chats)
            failed, errored, timed_out = await asyncio.gather(failing, erroring, timing_out)
    emulator.assert_clean()
    assert emulator.peak_outstanding >= streams, "the chats did not run at the same time"

    run_ids = set()
    for n, result in enumerate(results):
        assert result.kind == "streamed"
        assert result.trailers == {}, result.trailer_error
        assert result.prelude is not None
        assert result.prelude["statusCode"] == 200
        events = sse_events(result)
        assert [event_id for event_id, _ in events] == list(range(len(events)))
        kinds = [event["chunk_type"] for _, event in events]
        assert kinds[0] == "start"
        assert kinds[-1] == "done"
        start, done = events[0][1], events[-1][1]
        assert (start["agent_id"], start["session_id"]) == (agents[n], f"session-{n}")
        run_ids.add(start["run_id"])
        text = "".join(event["content"] for _, event in events if event["chunk_type"] == "content")
        assert text == reply_of(n)
        assert (done["status"], done["final_response"]) == ("completed", reply_of(n))
    assert len(run_ids) == streams

    assert failed.kind == "error"
    assert failed.json["errorType"] == "UnsupportedEvent"
    error_kinds = [event["chunk_type"] for _, event in sse_events(errored)]
    assert "error" in error_kinds
    assert error_kinds[-1] == "done"
    # The app stops its run before the deadline and says so; if it is still starting when the deadline
    # comes (a busy machine), the runtime cuts the invocation. Either way it ends on time, alone.
    if timed_out.kind == "error":
        assert timed_out.json["errorType"] == "InvocationTimeout"
    elif timed_out.trailers:
        assert timed_out.trailer_error is not None
        assert timed_out.trailer_error["errorType"] == "InvocationTimeout"
    else:
        last = sse_events(timed_out)[-1][1]
        assert (last["chunk_type"], last["status"]) == ("done", "timeout"), timed_out
    assert "lost the Runtime API" not in running.output
    assert "the runtime failed" not in running.output
