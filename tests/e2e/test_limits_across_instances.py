"""Per-tenant limits hold across instances: two app processes on one DynamoDB (moto's server), black-box.

Every instance runs with ``AGENTSTREAM_MAX_CONCURRENT_RUNS=2`` and ``AGENTSTREAM_RATE_LIMIT_PER_MINUTE=5``.
Over either limit, on any instance and any route that starts a run (SSE chat, JSON chat, the AI SDK
chat, ``/v1/chat/completions``), the answer is ``429`` ``rate_limited`` with a ``Retry-After``, before
any stream starts, leaving no run record and no ``ACTIVE`` pointer; a run's slot is free again once
its response has ended; one tenant at its limits never refuses another.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY
from tests.support.cluster import Cluster, Instance, Stream, open_sse, running_cluster, wait_until

CONCURRENT = 2
PER_MINUTE = 5
ENV = {
    "AGENTSTREAM_ADMIN_KEY": ADMIN_KEY,
    "AGENTSTREAM_MAX_CONCURRENT_RUNS": str(CONCURRENT),
    "AGENTSTREAM_RATE_LIMIT_PER_MINUTE": str(PER_MINUTE),
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    log_dir: Path = tmp_path_factory.mktemp("limits")
    with running_cluster(log_dir, env=ENV, profiles={"a": {}, "b": {}}, table="limits") as c:
        c.start("a", "b")
        yield c


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def tenant_key(instance: Instance, tenant: str) -> str:
    r = httpx.post(
        f"{instance.url}/api/v1/keys", json={"tenant": tenant}, headers=_auth(ADMIN_KEY), timeout=10
    )
    assert r.status_code == 201, r.text
    key: str = r.json()["data"]["key"]
    return key


def agent(instance: Instance, key: str, **options: Any) -> str:
    model = {
        "provider": "scripted",
        "name": "s",
        "options": {"reply": "fine, thanks", "delay_ms": 1, **options},
    }
    r = httpx.post(f"{instance.url}/api/v1/agents", json={"name": "lim", "model": model}, headers=_auth(key))
    assert r.status_code == 201, r.text
    agent_id: str = r.json()["data"]["id"]
    return agent_id


def stream(instance: Instance, key: str, agent_id: str) -> Stream:
    return open_sse(
        "POST", f"{instance.url}/api/v1/agents/{agent_id}/chat/stream", key=key, body={"message": "hi"}
    )


def assert_completed(s: Stream) -> None:
    assert s.status == 200, s.raw[:300]
    assert s.done is not None
    assert s.done.data["status"] == "completed"


def start_in_background(instance: Instance, key: str, agent_id: str) -> tuple[threading.Thread, list[Stream]]:
    """A stalling run streaming from ``instance`` in a thread, returned once its headers arrived."""
    opened = threading.Event()
    out: list[Stream] = []

    def run() -> None:
        out.append(
            open_sse(
                "POST",
                f"{instance.url}/api/v1/agents/{agent_id}/chat/stream",
                key=key,
                body={"message": "hi"},
                on_open=lambda s: opened.set(),
                read_timeout=30,
            )
        )
        opened.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert opened.wait(10)
    assert not out, "the stalling run ended at once"
    return thread, out


def refused(r: httpx.Response, *, openai: bool = False) -> float:
    """The answer is a 429 rate_limited in the route's error shape; returns its Retry-After."""
    assert r.status_code == 429, r.text
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    if openai:
        assert error["type"] == "rate_limit_error"
        assert set(error) == {"message", "type", "param", "code"}
    else:
        assert set(error) == {"code", "message"}
    assert error["code"] == "rate_limited"
    assert "x-run-id" not in r.headers
    return float(r.headers["retry-after"])


def chat_requests(url: str, agent_id: str, chat_id: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every route that starts a run: its URL and a body."""
    return {
        "stream": (f"{url}/api/v1/agents/{agent_id}/chat/stream", {"message": "hi"}),
        "json": (f"{url}/api/v1/agents/{agent_id}/chat", {"message": "hi"}),
        "ui": (
            f"{url}/api/v1/agents/{agent_id}/chat/ui",
            {
                "id": chat_id,
                "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}],
            },
        ),
        "openai": (
            f"{url}/v1/chat/completions",
            {"model": agent_id, "messages": [{"role": "user", "content": "hi"}], "stream": True},
        ),
    }


def run_records(cluster: Cluster, tenant: str) -> set[str]:
    prefix = f"T#{tenant}#R#"
    items = cluster.db.scan(
        TableName=cluster.table,
        FilterExpression="begins_with(pk, :p) AND sk = :run",
        ExpressionAttributeValues={":p": {"S": prefix}, ":run": {"S": "RUN"}},
        ConsistentRead=True,
    )["Items"]
    return {item["pk"]["S"].removeprefix(prefix) for item in items}


def active_pointers(cluster: Cluster, tenant: str) -> list[str]:
    items = cluster.db.scan(
        TableName=cluster.table,
        FilterExpression="begins_with(pk, :p) AND sk = :active",
        ExpressionAttributeValues={":p": {"S": f"T#{tenant}#"}, ":active": {"S": "ACTIVE"}},
        ConsistentRead=True,
    )["Items"]
    return [item["pk"]["S"] for item in items]


def running_slots(cluster: Cluster, tenant: str) -> set[str]:
    item = cluster.db.get_item(
        TableName=cluster.table,
        Key={"pk": {"S": f"T#{tenant}#LIMITS"}, "sk": {"S": "LIMITS"}},
        ConsistentRead=True,
    ).get("Item", {})
    return set(item.get("slots", {}).get("M", {}))


def test_concurrent_runs_are_limited_across_instances_on_every_route(cluster: Cluster) -> None:
    a, b = cluster["a"], cluster["b"]
    key, other_key = tenant_key(a, "limc"), tenant_key(a, "limc-other")
    stalling, quick = agent(a, key, stall_after=1), agent(b, key)
    other_agent = agent(a, other_key)

    # one run streaming from each instance: the tenant's two slots
    first, first_out = start_in_background(a, key, stalling)
    second, second_out = start_in_background(b, key, stalling)
    held = running_slots(cluster, "limc")
    assert len(held) == CONCURRENT
    assert run_records(cluster, "limc") == held

    # a third start is refused on both instances, on every route, before any stream
    for instance in (a, b):
        for route, (url, body) in chat_requests(instance.url, quick, f"refused-{instance.name}").items():
            r = httpx.post(url, json=body, headers=_auth(key), timeout=10)
            retry_after = refused(r, openai=route == "openai")
            assert 1 <= retry_after <= 5, (route, retry_after)
    # ...and leaves nothing: no run record, no pointer to resume, no slot
    assert run_records(cluster, "limc") == held
    assert active_pointers(cluster, "limc") == []
    r = httpx.get(f"{a.url}/api/v1/agents/{quick}/chat/ui/refused-a/stream", headers=_auth(key), timeout=10)
    assert r.status_code == 204
    assert running_slots(cluster, "limc") == held

    # another tenant is not refused meanwhile
    assert_completed(stream(b, other_key, other_agent))

    # a run that ends (cancelled from the other instance) frees its slot for a start anywhere
    run_id = sorted(held)[0]
    r = httpx.post(f"{b.url}/api/v1/runs/{run_id}/cancel", headers=_auth(key), timeout=10)
    assert r.status_code == 202, r.text
    wait_until(lambda: run_id not in running_slots(cluster, "limc"), timeout=10, what="slot freed")
    assert_completed(stream(b, key, quick))
    assert_completed(stream(a, key, quick))  # sequential runs: the slot comes back each time

    # the other stalling run is cancelled too: every slot is free, every run recorded once
    (remaining,) = held - {run_id}
    assert (
        httpx.post(f"{a.url}/api/v1/runs/{remaining}/cancel", headers=_auth(key), timeout=10).status_code
        == 202
    )
    for thread in (first, second):
        thread.join(15)
    ended = [s.done.data["status"] if s.done else s.ended for s in (*first_out, *second_out)]
    assert ended == ["cancelled", "cancelled"]
    wait_until(lambda: not running_slots(cluster, "limc"), timeout=5, what="all slots free")
    assert len(run_records(cluster, "limc")) == CONCURRENT + 2


def test_runs_per_minute_are_limited_across_instances(cluster: Cluster) -> None:
    a, b = cluster["a"], cluster["b"]
    key, other_key = tenant_key(b, "limr"), tenant_key(b, "limr-other")
    quick, other_agent = agent(a, key), agent(b, other_key)
    # the count is per calendar minute: start with time enough left in this one
    if 60 - time.time() % 60 < 20:
        time.sleep(60 - time.time() % 60 + 0.2)

    for n in range(PER_MINUTE):  # alternate instances and routes: one count for all
        instance = (a, b)[n % 2]
        if n % 3 == 2:
            r = httpx.post(
                f"{instance.url}/api/v1/agents/{quick}/chat",
                json={"message": "hi"},
                headers=_auth(key),
                timeout=10,
            )
            assert r.status_code == 200, r.text
        else:
            assert_completed(stream(instance, key, quick))

    for instance in (a, b):
        for route, (url, body) in chat_requests(instance.url, quick, f"late-{instance.name}").items():
            r = httpx.post(url, json=body, headers=_auth(key), timeout=10)
            retry_after = refused(r, openai=route == "openai")
            left = 60 - time.time() % 60
            assert abs(retry_after - left) <= 2, (route, retry_after, left)  # when the next minute opens
    assert len(run_records(cluster, "limr")) == PER_MINUTE
    assert active_pointers(cluster, "limr") == []
    assert running_slots(cluster, "limr") == set()  # refused starts hold no slot, ended runs none

    assert_completed(stream(a, other_key, other_agent))
