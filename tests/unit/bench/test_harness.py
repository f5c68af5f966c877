"""The bench harness's own logic: the parts whose mistakes would silently skew the figures."""

from __future__ import annotations

import asyncio
import json

import pytest

from bench.client import Dechunker, parse_sse, post_sse
from bench.dynamo_proxy import consumed_units, inject_capacity
from bench.report import Figure
from bench.stats import percentile, sequential_trips
from bench.text import pieces, reply
from bench.upstream import Upstream, script_marker

pytestmark = pytest.mark.anyio


def test_sequential_trips_counts_overlapping_calls_once() -> None:
    assert sequential_trips([]) == 0
    # get agent, then history and memory in parallel, then create the run: three in a row
    assert sequential_trips([(0, 1), (1.5, 3), (1.6, 2.5), (3.2, 4)]) == 3
    assert sequential_trips([(0, 1), (2, 3), (4, 5)]) == 3
    assert sequential_trips([(0, 5), (1, 2), (3, 4)]) == 2


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 95) == 95
    assert percentile(values, 99) == 99
    assert percentile([7.0], 99) == 7.0


def test_sse_events_carry_the_time_of_the_read_that_completed_them() -> None:
    body = b'id: 0\ndata: {"chunk_type":"content","content":"\xe4\xbd\xa0"}\n\n: ping\n\n'
    body += b'id: 1\ndata: {"a":1}\n\n'
    parts = (body[:20], body[20:50], body[50:])
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    dechunker = Dechunker()
    # 7-byte reads, each stamped with its offset in the raw response
    reads = [(chunked[i : i + 7], float(i)) for i in range(0, len(chunked), 7)]
    events = parse_sse([(dechunker.feed(data), at) for data, at in reads])
    assert dechunker.finished
    assert [e.data for e in events] == [{"chunk_type": "content", "content": "你"}, {"a": 1}]
    first_end = chunked.index(b"}\n\n") + 3  # the raw offset just past the first event
    assert events[0].at == float((first_end - 1) // 7 * 7)


def test_capacity_is_injected_only_where_dynamodb_takes_it() -> None:
    body, injected = inject_capacity("PutItem", b'{"TableName":"t"}')
    assert injected
    assert json.loads(body)["ReturnConsumedCapacity"] == "TOTAL"
    assert inject_capacity("DescribeTable", b'{"TableName":"t"}') == (b'{"TableName":"t"}', False)
    assert inject_capacity("Query", b'{"ReturnConsumedCapacity":"INDEXES"}')[1] is False
    assert consumed_units(b'{"ConsumedCapacity":{"TableName":"t","CapacityUnits":1.5}}') == 1.5
    batch = b'{"ConsumedCapacity":[{"CapacityUnits":2.0},{"ReadCapacityUnits":1,"WriteCapacityUnits":2}]}'
    assert consumed_units(batch) == 5.0
    assert consumed_units(b"{}") is None


def test_every_streamer_sends_the_same_text() -> None:
    deltas = pieces(50, 4)
    assert len(deltas) == 50
    assert all(len(d) == 4 for d in deltas)
    assert "".join(deltas) == reply(50, 4)


def test_figures_pass_on_ratio_or_value() -> None:
    assert Figure("s", "k", "n", "ms", 30, 10, "floor", ratio_max=3).passed is True
    assert Figure("s", "k", "n", "ms", 31, 10, "floor", ratio_max=3).passed is False
    assert Figure("s", "k", "n", "WCU", 13, value_max=12).passed is False
    assert Figure("s", "k", "n", "ms", 5).passed is None


async def test_fake_upstream_paces_tokens_on_an_absolute_schedule() -> None:
    upstream = Upstream()
    server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        message = "go " + script_marker(id="t1", n=5, chars=4, pace_ms=30)
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": message}]}
        stream = await post_sse(f"http://127.0.0.1:{port}/v1/chat/completions", body)
    finally:
        server.close()
        await server.wait_closed()
    assert stream.error is None
    deltas = [c["delta"].get("content") for e in stream.events for c in e.data.get("choices", [])]
    assert "".join(d for d in deltas if d) == reply(5, 4)
    (record,) = upstream.records
    assert record["id"] == "t1"
    sent = record["sent_at"]
    assert len(sent) == 5
    assert 0.11 < sent[-1] - sent[0] < 0.2  # 4 gaps of 30 ms, not drifting
