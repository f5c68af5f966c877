"""The run log in DynamoDB (moto) and its replay: exact and gap-free, or an explicit end."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from agentstream.core.ports import RunRecord
from agentstream.errors import StoreUnavailable
from agentstream.store import Store
from agentstream.web.routes.runs import Replay
from tests.support.server import parse_sse

pytestmark = pytest.mark.anyio


def _content(seq: int, text: str) -> list[Any]:
    return [seq, {"chunk_type": "content", "content": text}]


def _batch(*events: list[Any]) -> str:
    return json.dumps(list(events), ensure_ascii=False)


async def _replay(store: Store, run_id: str, after: int = -1, deadline: float | None = None) -> list[Any]:
    run = await store.runs.get("t", run_id)
    raw = b"".join([frame async for frame in Replay(store, "t", run, after, 15, deadline).frames()])
    return parse_sse(raw)


@pytest.fixture
def store(dynamodb: Any) -> Store:
    return Store("agentstream", dynamodb)


async def test_batches_are_written_once_and_read_only_when_new(store: Store) -> None:
    await store.runs.create("t", RunRecord("run_1", "a", "s", "u"))
    await store.runs.append("t", "run_1", 0, _batch([0, {"chunk_type": "start"}], _content(1, "你")))
    await store.runs.append("t", "run_1", 0, _batch([0, {"chunk_type": "start"}], _content(1, "你")))  # retry
    await store.runs.append("t", "run_1", 2, _batch(_content(2, "好" * 150_000)))  # more than one item
    batches = await store.runs.batches("t", "run_1")
    assert [first for first, _ in batches] == [0, 2]
    assert batches[1][1] == [(2, {"chunk_type": "content", "content": "好" * 150_000})]
    assert [first for first, _ in await store.runs.batches("t", "run_1", after_first=0)] == [2]
    assert await store.runs.batches("t", "run_1", after_first=2) == []


async def test_a_finished_run_replays_exactly_from_any_id(store: Store) -> None:
    await store.runs.create("t", RunRecord("run_1", "a", "s", "u"))
    done = {"chunk_type": "done", "status": "completed", "final_response": "你好🙂"}
    await store.runs.append("t", "run_1", 0, _batch([0, {"chunk_type": "start"}], _content(1, "你")))
    await store.runs.append("t", "run_1", 2, _batch(_content(2, "好"), _content(3, "🙂"), [4, done]))
    await store.runs.finish(
        "t", "run_1", status="completed", usage={}, metrics={}, last_seq=4, log_complete=True
    )
    for after in range(-1, 5):
        events = await _replay(store, "run_1", after)
        assert [seq for seq, _ in events] == list(range(after + 1, 5))
    assert (await _replay(store, "run_1"))[-1][1] == done


async def test_an_incomplete_log_ends_with_an_error_never_a_hole(store: Store) -> None:
    await store.runs.create("t", RunRecord("run_1", "a", "s", "u"))
    await store.runs.append("t", "run_1", 0, _batch([0, {"chunk_type": "start"}], _content(1, "abc")))
    # events 2-5 were never written; the run ended and said so
    await store.runs.finish(
        "t", "run_1", status="completed", usage={}, metrics={}, last_seq=5, log_complete=False
    )
    events = await _replay(store, "run_1")
    assert [seq for seq, _ in events] == [0, 1, 2, 3]
    error, done = events[2][1], events[3][1]
    assert (error["chunk_type"], error["code"]) == ("error", "log_incomplete")
    assert (done["chunk_type"], done["status"], done["final_response"]) == ("done", "error", "abc")


async def test_a_run_whose_instance_died_reads_and_replays_as_timeout(store: Store) -> None:
    past = int(time.time() * 1000) - 60_000
    await store.runs.create("t", RunRecord("run_1", "a", "s", "u", deadline_at=past))
    await store.runs.append("t", "run_1", 0, _batch([0, {"chunk_type": "start"}], _content(1, "半")))
    run = await store.runs.get("t", "run_1")
    assert (run.status, run.to_dict()["status"]) == ("running", "timeout")
    events = await _replay(store, "run_1")
    assert [seq for seq, _ in events] == [0, 1, 2]
    assert (events[-1][1]["status"], events[-1][1]["final_response"]) == ("timeout", "半")


async def test_a_replay_stops_resumably_before_its_own_deadline(store: Store) -> None:
    await store.runs.create(
        "t", RunRecord("run_1", "a", "s", "u", deadline_at=int(time.time() * 1000) + 60_000)
    )
    await store.runs.append("t", "run_1", 0, _batch([0, {"chunk_type": "start"}], _content(1, "x")))
    started = time.monotonic()
    run = await store.runs.get("t", "run_1")
    frames = [f async for f in Replay(store, "t", run, -1, 15, time.monotonic() + 1.0).frames()]
    assert time.monotonic() - started < 2
    assert [seq for seq, _ in parse_sse(b"".join(frames))] == [0, 1]
    assert b"reconnect with Last-Event-ID: 1" in frames[-1]


async def test_a_replay_that_loses_the_store_ends_resumably_not_with_a_made_up_done(store: Store) -> None:
    await store.runs.create("t", RunRecord("run_1", "a", "s", "u"))
    run = await store.runs.get("t", "run_1")

    async def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("the data store is unreachable")

    store.runs.batches = unavailable  # type: ignore[method-assign]
    frames = [f async for f in Replay(store, "t", run, 3, 15, None).frames()]
    assert parse_sse(b"".join(frames)) == []
    assert frames == [b": the data store is unavailable; reconnect with Last-Event-ID: 3\nretry: 500\n\n"]
