"""Runs over a real socket: cancel from another request, resume after a broken connection."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.conftest import ADMIN_KEY
from tests.support.server import SSEStream, parse_sse, read_sse

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


def _agent(base: str, options: dict[str, Any]) -> str:
    body = {"name": "runs", "model": {"provider": "scripted", "name": "s", "options": options}}
    r = httpx.post(f"{base}/api/v1/agents", json=body, headers=AUTH)
    assert r.status_code == 201, r.text
    agent_id: str = r.json()["data"]["id"]
    return agent_id


def test_cancel_from_another_request_ends_the_stream_with_done_cancelled(live_server: str) -> None:
    agent = _agent(live_server, {"reply": "x" * 200, "delta_chars": 2, "delay_ms": 50})
    cancelled_at: list[float] = []

    def cancel_after_a_few(stream: SSEStream) -> None:
        if len(stream.events) == 5:
            run_id = stream.headers["x-run-id"]
            cancelled_at.append(time.monotonic())
            r = httpx.post(f"{live_server}/api/v1/runs/{run_id}/cancel", headers=AUTH)
            assert r.status_code == 202

    stream = read_sse(
        f"{live_server}/api/v1/agents/{agent}/chat/stream",
        {"message": "go"},
        key=ADMIN_KEY,
        on_event=cancel_after_a_few,
    )
    done = stream.events[-1]
    assert done.data["chunk_type"] == "done"
    assert done.data["status"] == "cancelled"
    assert done.at - cancelled_at[0] < 1.0
    assert [e.data["chunk_type"] for e in stream.events].count("done") == 1
    assert 0 < len(done.data["final_response"]) < 200
    assert done.data["final_response"] == stream.content
    deadline = time.monotonic() + 3
    status = None
    while status != "cancelled" and time.monotonic() < deadline:
        status = httpx.get(f"{live_server}/api/v1/runs/{stream.headers['x-run-id']}", headers=AUTH).json()[
            "data"
        ]["status"]
        time.sleep(0.05)
    assert status == "cancelled"


def test_resume_after_a_broken_connection_with_last_event_id(live_server: str) -> None:
    reply = "断线重连以后，从上次的事件继续。Resume continues exactly where it broke. 🙂"
    agent = _agent(live_server, {"reply": reply, "delta_chars": 3, "delay_ms": 40})
    body = {"message": "go", "stream_options": {"on_disconnect": "continue"}}
    first = read_sse(f"{live_server}/api/v1/agents/{agent}/chat/stream", body, key=ADMIN_KEY, stop_after=5)
    run_id = first.headers["x-run-id"]
    last_id = first.events[-1].id
    assert last_id == "4"
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "GET", f"{live_server}/api/v1/runs/{run_id}/events", headers={**AUTH, "Last-Event-ID": last_id}
        ) as r,
    ):
        rest = parse_sse(b"".join(r.iter_raw()))
    ids = [int(e.id or -1) for e in first.events] + [i for i, _ in rest]
    assert ids == list(range(len(ids)))  # no gap, no repeat
    text = first.content + "".join(p["content"] for _, p in rest if p["chunk_type"] == "content")
    assert text == reply
    assert rest[-1][1]["chunk_type"] == "done"
    assert rest[-1][1]["final_response"] == reply
