"""Runs across instances, black-box: two (or more) app processes on one DynamoDB, driven over HTTP.

What the run engine must guarantee whatever instance a request lands on:
- a cancel sent to instance B stops a run streaming from instance A within a second, whatever A is doing
  (waiting for the first token, inside a slow tool, on a stalled upstream, mid-text);
- the run log is gap-free: a replay from B is exactly what A streamed, or ends with an explicit
  ``error`` + ``done``, never with a silent hole, even when some log writes failed;
- a run whose instance died reads as ``timeout`` once past its deadline, and replays to a ``done``
  ``timeout`` holding exactly the text that was logged;
- a slow store does not keep ``done`` from reaching the client before the run's deadline;
- a client that lost its connection after any event resumes on another instance with Last-Event-ID.

Instances are ``tests.support.instance_app`` under uvicorn (tests/support/cluster.py), configured through
environment variables only; faults are injected into their DynamoDB client (tests/support/store_faults.py).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.conftest import ADMIN_KEY
from tests.fakes.openai_upstream import FakeOpenAI, Reply
from tests.support.cluster import Cluster, Instance, Stream, open_sse, running_cluster, wait_until

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
STATUSES = {"completed", "error", "cancelled", "timeout"}
CANCEL_WITHIN = 1.0  # seconds from B's 202 to A's done
# Settle time before a cancel in a quiet phase: longer than a run-log flush (AGENTSTREAM_LOG_FLUSH_SECONDS,
# default 1), so A has nothing left to write and can only learn of the cancel by its heartbeat.
SETTLE = 1.3
SLOW_STORE_MAX_RUN_SECONDS = 4
LOST_RUN_MAX_RUN_SECONDS = 4

# every instance: one table, the fake upstream, the default heartbeat (0.8 s: a cancel lands within 1 s)
COMMON_ENV = {
    "AGENTSTREAM_ADMIN_KEY": ADMIN_KEY,
    "OPENAI_API_KEY": "sk-fake",
    "AGENTSTREAM_TEST_SLOW_TOOL_SECONDS": "20",
}
PROFILES = {
    "a": {},
    "b": {},
    # the first two run-log writes fail
    "flaky": {"AGENTSTREAM_TEST_FAIL_EV_WRITES": "2"},
    # dies mid-run in its test; its runs end 4 s after they start, done 0.5 s before that
    "short": {
        "AGENTSTREAM_MAX_RUN_SECONDS": str(LOST_RUN_MAX_RUN_SECONDS),
        "AGENTSTREAM_DEADLINE_MARGIN_MS": "500",
    },
    # every store call takes half a second; runs have a 4 s deadline
    "slow_store": {
        "AGENTSTREAM_TEST_STORE_LATENCY_MS": "500",
        "AGENTSTREAM_MAX_RUN_SECONDS": str(SLOW_STORE_MAX_RUN_SECONDS),
    },
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def xc(tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI) -> Iterator[Cluster]:
    """The cross-instance cluster: instances ``a`` and ``b`` started, the others on first use."""
    log_dir: Path = tmp_path_factory.mktemp("instances")
    env = {**COMMON_ENV, "OPENAI_BASE_URL": upstream.base_url}
    with running_cluster(log_dir, env=env, profiles=PROFILES) as cluster:
        cluster.start("a", "b")
        yield cluster


@pytest.fixture
def fresh_upstream(upstream: FakeOpenAI) -> FakeOpenAI:
    assert upstream.pending == 0, "a previous test left scripted upstream replies unused"
    return upstream


# helpers (HTTP only)


def create_agent(instance: Instance, model: dict[str, Any], tools: list[str] | None = None) -> str:
    body = {"name": "xinst", "model": model, "tools": tools or []}
    r = httpx.post(f"{instance.url}/api/v1/agents", json=body, headers=AUTH, timeout=10)
    assert r.status_code == 201, r.text
    agent_id: str = r.json()["data"]["id"]
    return agent_id


def scripted(**options: Any) -> dict[str, Any]:
    return {"provider": "scripted", "name": "s", "options": options}


def run_status(instance: Instance, run_id: str) -> str:
    r = httpx.get(f"{instance.url}/api/v1/runs/{run_id}", headers=AUTH, timeout=10)
    assert r.status_code == 200, r.text
    return str(r.json()["data"]["status"])


def chat(
    instance: Instance, agent_id: str, message: str = "go", *, stream_options: dict[str, Any] | None = None
) -> tuple[str, dict[str, Any]]:
    body: dict[str, Any] = {"message": message}
    if stream_options:
        body["stream_options"] = stream_options
    return f"{instance.url}/api/v1/agents/{agent_id}/chat/stream", body


def replay(
    instance: Instance, run_id: str, *, last_event_id: int | None = None, after: int | None = None
) -> Stream:
    headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    params = {} if after is None else {"after": after}
    return open_sse(
        "GET",
        f"{instance.url}/api/v1/runs/{run_id}/events",
        key=ADMIN_KEY,
        headers=headers,
        params=params,
        read_timeout=5,
    )


def describe(stream: Stream) -> str:
    return f"ended={stream.ended!r} ids={stream.ids} types={stream.types}"


def assert_well_formed(stream: Stream, *, first_id: int = 0) -> dict[str, Any]:
    """Ids consecutive from ``first_id``, exactly one ``done`` and it is last; return its data."""
    assert stream.status == 200, stream.raw[:500]
    assert stream.ids == list(range(first_id, first_id + len(stream.events))), describe(stream)
    assert stream.types.count("done") == 1, describe(stream)
    assert stream.done is not None, describe(stream)
    done = stream.done.data
    assert done["status"] in STATUSES
    if done["status"] == "error":
        assert stream.types[-2] == "error", describe(stream)
    return done


# 1. cancel from instance B reaches a run streaming from instance A, whatever A is doing


@dataclass
class CancelCase:
    model: dict[str, Any]
    in_phase: Callable[[Stream], bool]  # A is in the phase once this holds for what A streamed
    settle: float  # how long A stays in the phase before the cancel
    tools: list[str] = field(default_factory=list)
    message: str = "go"
    upstream: list[Reply] = field(default_factory=list)


def _openai() -> dict[str, Any]:
    return {"provider": "openai", "name": "fake-model"}


STALLED_TEXT = ("Stalled ", "after three ", "deltas: ")
CANCEL_CASES = {
    # the model never sends a first token
    "first_token": CancelCase(scripted(stall_after=0), lambda s: len(s.events) >= 1, SETTLE),
    # the upstream sends a few deltas, then nothing, connection open
    "stalled_upstream": CancelCase(
        _openai(),
        lambda s: s.content == "".join(STALLED_TEXT),
        SETTLE,
        upstream=[Reply().text(*STALLED_TEXT).stall()],
    ),
    # the model asked for a tool that takes 20 s
    "slow_tool": CancelCase(
        _openai(),
        lambda s: "tool_call" in s.types,
        SETTLE,
        tools=["slow_tool"],
        upstream=[
            Reply()
            .tool_call(0, id="call_slow", name="slow_tool", arguments='{"seconds": 20}')
            .finish("tool_calls")
            .usage(5, 1)
            .done()
        ],
    ),
    # text is streaming (10 s of it)
    "mid_text": CancelCase(
        scripted(reply="取消以后不再有文字。Cancelled mid-text. " * 10, delta_chars=2, delay_ms=50),
        lambda s: s.types.count("content") >= 5,
        0.0,
    ),
}


@pytest.mark.parametrize("phase", list(CANCEL_CASES))
def test_cancel_on_b_stops_a_run_streaming_from_a_within_a_second(
    xc: Cluster, fresh_upstream: FakeOpenAI, phase: str
) -> None:
    case = CANCEL_CASES[phase]
    a, b = xc["a"], xc["b"]
    agent = create_agent(b, case.model, case.tools)
    fresh_upstream.enqueue(*case.upstream)
    first_request = len(fresh_upstream.requests)
    cancel: dict[str, Any] = {}

    def cancel_from_b(stream: Stream) -> None:
        if cancel or not case.in_phase(stream):
            return
        time.sleep(case.settle)  # A stays in the phase (there is nothing to poll for: A is quiet)
        r = httpx.post(f"{b.url}/api/v1/runs/{stream.run_id}/cancel", headers=AUTH, timeout=10)
        cancel.update(status=r.status_code, body=r.text, at=time.monotonic())

    url, body = chat(a, agent, case.message)
    stream = open_sse("POST", url, key=ADMIN_KEY, body=body, on_event=cancel_from_b, read_timeout=4)

    assert cancel, f"A never reached the phase: {describe(stream)}"
    assert cancel["status"] == 202, cancel["body"]
    done = assert_well_formed(stream)
    assert done["status"] == "cancelled"
    assert stream.done is not None
    took = stream.done.at - cancel["at"]
    assert took <= CANCEL_WITHIN, f"done came {took:.2f} s after the cancel was accepted"
    assert done["final_response"] == stream.content
    if phase == "mid_text":
        assert 0 < len(done["final_response"]) < len(case.model["options"]["reply"])
    if phase == "stalled_upstream":  # the upstream request was closed, not left hanging
        assert fresh_upstream.requests[first_request].client_closed.wait(1.0)
    if phase == "slow_tool":  # the model was not called again after the tool
        assert len(fresh_upstream.requests) == first_request + 1
    wait_until(lambda: run_status(b, stream.run_id) == "cancelled", timeout=3, what="GET on B says cancelled")
    assert run_status(a, stream.run_id) == "cancelled"


# 2. the run log never has a silent hole


def test_a_failed_log_flush_still_replays_exactly_or_ends_with_an_explicit_error(xc: Cluster) -> None:
    flaky, b = xc["flaky"], xc["b"]
    reply = "日志写失败两次，重放仍然完整。The first two log writes fail; the replay is whole. 🙂 " * 2
    agent = create_agent(b, scripted(reply=reply, delta_chars=3, delay_ms=60))  # ~3 s, several flushes

    url, body = chat(flaky, agent)
    live = open_sse("POST", url, key=ADMIN_KEY, body=body)
    done = assert_well_formed(live)
    assert (done["status"], done["final_response"], live.content) == ("completed", reply, reply)
    log = flaky.log_text()
    assert "failing run-log write 2/2" in log, "the injected faults did not fire:\n" + log[-2000:]

    again = replay(b, live.run_id)
    assert again.ended == "eof", describe(again)
    replayed_done = assert_well_formed(again)
    assert replayed_done["final_response"] == again.content
    if again.types[-2:] == ["error", "done"] and replayed_done["status"] == "error":
        # the log could not be completed: said so explicitly, after an exact prefix of the live stream
        prefix = again.events[:-2]
        assert [(e.id, e.data) for e in prefix] == [(e.id, e.data) for e in live.events[: len(prefix)]]
    else:
        assert [(e.id, e.data) for e in again.events] == [(e.id, e.data) for e in live.events]


# 3. deadlines: recorded, honoured when the instance died, honoured with a slow store


def _epoch_seconds(attribute: dict[str, Any]) -> float:
    """A DynamoDB time attribute as epoch seconds: a number (s or ms) or an ISO-8601 / numeric string."""
    raw = attribute.get("N", attribute.get("S"))
    assert raw is not None, f"not a number or string attribute: {attribute}"
    try:
        value = float(raw)
    except ValueError:
        return datetime.fromisoformat(str(raw).replace("Z", "+00:00")).timestamp()
    return value / 1000 if value > 1e11 else value


def test_the_run_record_holds_the_run_deadline(xc: Cluster) -> None:
    a = xc["a"]
    agent = create_agent(a, scripted(reply="a short one", delay_ms=0))
    started = datetime.now(UTC).timestamp()
    url, body = chat(a, agent)
    stream = open_sse("POST", url, key=ADMIN_KEY, body=body)
    assert assert_well_formed(stream)["status"] == "completed"
    item = xc.run_item(stream.run_id)
    assert item is not None
    assert "deadline_at" in item, f"no deadline_at in the run record: {sorted(item)}"
    deadline = _epoch_seconds(item["deadline_at"])
    # outside Lambda: AGENTSTREAM_MAX_RUN_SECONDS, default 900
    assert started + 800 <= deadline <= started + 1000, deadline - started


@pytest.mark.slow
def test_a_run_whose_instance_died_reads_timeout_after_its_deadline_and_replays_to_done_timeout(
    xc: Cluster,
) -> None:
    short, b = xc["short"], xc["b"]
    reply = "实例被杀死以后，运行在截止时间后显示超时。" * 20  # 10 s of text, far past the 4 s deadline
    agent = create_agent(b, scripted(reply=reply, delta_chars=2, delay_ms=50))
    url, body = chat(short, agent, stream_options={"on_disconnect": "continue"})
    seen: dict[str, Stream] = {}
    opened = threading.Event()

    def on_open(stream: Stream) -> None:
        seen["stream"] = stream
        opened.set()

    started = time.monotonic()
    reader = threading.Thread(
        target=open_sse, args=("POST", url), kwargs={"key": ADMIN_KEY, "body": body, "on_open": on_open}
    )
    reader.start()
    try:
        assert opened.wait(10)
        live = seen["stream"]
        assert live.status == 200
        # some text streamed and flushed to the run log, then the instance dies
        wait_until(lambda: live.types.count("content") >= 10, timeout=5, what="A streams text")
        wait_until(lambda: xc.run_log_items(live.run_id), timeout=5, what="A flushed its log")
        short.kill()
        killed = time.monotonic()
    finally:
        reader.join(10)
    assert killed - started < LOST_RUN_MAX_RUN_SECONDS, "too slow to kill A before its deadline"
    assert "done" not in live.types, "the run ended before A was killed: nothing was lost"

    if time.monotonic() - started < LOST_RUN_MAX_RUN_SECONDS - 0.5:
        assert run_status(b, live.run_id) == "running"  # not timed out before its deadline
    remaining = started + LOST_RUN_MAX_RUN_SECONDS + 4 - time.monotonic()
    wait_until(
        lambda: run_status(b, live.run_id) == "timeout",
        timeout=remaining,
        interval=0.1,
        what="GET on B says timeout after the dead run's deadline",
    )

    again = replay(b, live.run_id)
    assert again.ended == "eof", describe(again)
    done = assert_well_formed(again)
    assert done["status"] == "timeout"
    assert done["final_response"] == again.content
    # what was logged is what A streamed (ids A's client got before the kill, where both have them)
    live_by_id = {e.id: e.data for e in live.events}
    for event in again.events[:-1]:
        if event.id in live_by_id:
            assert event.data == live_by_id[event.id], event.id
    assert reply.startswith(again.content)


@pytest.mark.slow
def test_a_slow_store_still_gets_done_to_the_client_before_the_run_deadline(xc: Cluster) -> None:
    slow, b = xc["slow_store"], xc["b"]
    reply = "存储很慢，截止时间之前仍然收到 done。" * 15  # 10 s of text against a 4 s deadline
    agent = create_agent(b, scripted(reply=reply, delta_chars=3, delay_ms=100))
    url, body = chat(slow, agent)
    started = time.monotonic()
    deadline = started + SLOW_STORE_MAX_RUN_SECONDS
    stream = open_sse("POST", url, key=ADMIN_KEY, body=body, read_timeout=6, give_up_at=deadline + 2)
    assert "store_faults: delaying" in slow.log_text()
    assert stream.status == 200, stream.raw[:500]
    assert stream.done is not None, f"no done by {deadline + 2 - started:.1f} s: {describe(stream)}"
    assert stream.done.at < deadline, f"done came {stream.done.at - started:.2f} s after the request"
    done = assert_well_formed(stream)
    assert done["status"] == "timeout"
    assert done["final_response"] == stream.content


# 4. resume on another instance after a broken connection, after any event


@pytest.mark.slow
@settings(
    max_examples=5,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_resume_on_b_after_any_event_gives_exactly_the_rest(xc: Cluster, data: st.DataObject) -> None:
    a, b = xc["a"], xc["b"]
    reply = data.draw(st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=24), "reply")
    delta_chars = data.draw(st.integers(1, 4), "delta_chars")
    content_events = math.ceil(len(reply) / delta_chars)
    k = data.draw(st.integers(0, content_events), "disconnect after id")  # 0 is start; done comes later
    by_header = data.draw(st.booleans(), "Last-Event-ID (else ?after=)")
    agent = create_agent(b, scripted(reply=reply, delta_chars=delta_chars, delay_ms=40))

    url, body = chat(a, agent, stream_options={"on_disconnect": "continue", "chunk_size": 0})
    first = open_sse("POST", url, key=ADMIN_KEY, body=body, stop_after=k + 1)
    assert first.ids == list(range(k + 1)), describe(first)
    assert first.ended == "stopped"
    assert "done" not in first.types

    rest = replay(b, first.run_id, **({"last_event_id": k} if by_header else {"after": k}))
    assert rest.ended == "eof", describe(rest)
    done = assert_well_formed(rest, first_id=k + 1)
    assert done["status"] == "completed"
    assert first.content + rest.content == reply
    assert done["final_response"] == reply
