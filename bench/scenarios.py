"""The six figures. Each function measures ours and its baseline in the same run and returns Figures.

All times are ``time.monotonic()`` (one clock for every process on the machine); server CPU is utime +
stime from /proc/<pid>/stat around a batch of streams, with nothing else sent to that server meanwhile.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.client import Stream, parse_sse, post_sse
from bench.report import Figure
from bench.stack import ADMIN_KEY, ROOT, Stack, cpu_seconds, settle
from bench.stats import median, percentile, sequential_trips
from bench.text import cjk_pieces, reply
from bench.upstream import script_marker

__all__ = ["SCENARIOS", "Config"]

BOOTSTRAP = ROOT / "layers" / "streaming-runtime" / "bootstrap"
FUNCTION_URL_EVENT = ROOT / "tests" / "events" / "function_url_v2.json"
# DynamoDB on-demand prices (us-east-1), per million request units.
PRICE_WRITE = 0.625
PRICE_READ = 0.125
FLOOR_STREAMS_FACTOR = 4


@dataclass(frozen=True)
class Config:
    quick: bool
    cpu_events: int  # content events per stream
    cpu_streams: int  # streams per measured batch
    cpu_repeats: int
    delta_chars: int
    levels: tuple[int, ...]
    latency_repeats: int
    single_repeats: int
    latency_tokens: int
    pace_ms: float
    turns: int
    turn_tokens: int
    ttfb_runs: int
    import_repeats: int
    lambda_colds: int
    lambda_warm: int
    lmi_levels: tuple[int, ...]
    lmi_tokens: int
    lmi_forks: int

    @classmethod
    def make(cls, quick: bool) -> Config:
        return cls(
            quick=quick,
            cpu_events=1000 if quick else 2000,
            cpu_streams=2 if quick else 3,
            cpu_repeats=2 if quick else 5,
            delta_chars=4,
            levels=(1, 100) if quick else (1, 10, 50, 100),
            latency_repeats=1 if quick else 3,
            single_repeats=1 if quick else 5,
            latency_tokens=100,
            pace_ms=20.0,
            turns=1 if quick else 5,
            turn_tokens=200,
            ttfb_runs=1 if quick else 5,
            import_repeats=3 if quick else 7,
            lambda_colds=2 if quick else 9,
            lambda_warm=3 if quick else 5,
            lmi_levels=(8, 32) if quick else (8, 32, 64),
            lmi_tokens=50 if quick else 100,
            lmi_forks=4 if quick else 8,
        )


def _chat_url(base: str, agent: str) -> str:
    return f"{base}/api/v1/agents/{agent}/chat/stream"


def _bench_id() -> str:
    return uuid.uuid4().hex[:12]


def _check(stream: Stream, expected: str | None) -> str | None:
    """Why a stream counts as an error, or None."""
    if not stream.ok:
        done = stream.done
        return stream.error or f"done status {done.get('status') if done else 'missing'}"
    if expected is not None and stream.content != expected:
        return f"content differs ({len(stream.content)} vs {len(expected)} chars)"
    return None


async def _sequential(requests: list[tuple[str, dict[str, Any], str | None]]) -> list[Stream]:
    return [await post_sse(url, body, key=key) for url, body, key in requests]


async def _concurrent(requests: list[tuple[str, dict[str, Any], str | None]]) -> list[Stream]:
    return list(await asyncio.gather(*(post_sse(url, body, key=key) for url, body, key in requests)))


# --- 1. server CPU per 1,000 content events ------------------------------------------------------


def cpu_per_event(stack: Stack, cfg: Config, ctx: dict[str, Any]) -> list[Figure]:
    n, chars = cfg.cpu_events, cfg.delta_chars
    text = reply(n, chars)
    scripted = stack.create_agent(
        {
            "name": "bench-cpu-scripted",
            "model": {
                "provider": "scripted",
                "name": "s",
                "options": {"reply": text, "delta_chars": chars, "delay_ms": 0},
            },
            "memory": {"enabled": False},
        }
    )
    openai = ctx["openai_agent"]

    def floor_body() -> dict[str, Any]:
        return {"reply": text, "delta_chars": chars, "delay_ms": 0}

    def openai_body() -> dict[str, Any]:
        return {"message": "go " + script_marker(id=_bench_id(), n=n, chars=chars), "user_id": "bench"}

    variants: dict[str, tuple[str, str, Callable[[], dict[str, Any]], str | None]] = {
        "floor": ("floor", f"{stack.floor}/stream", floor_body, None),
        "scripted": ("ours", _chat_url(stack.ours, scripted), lambda: {"message": "go"}, ADMIN_KEY),
        "openai": ("ours", _chat_url(stack.ours, openai), openai_body, ADMIN_KEY),
    }
    cpu_ms: dict[str, list[float]] = {v: [] for v in variants}
    rate: dict[str, list[float]] = {v: [] for v in variants}
    errors: dict[str, list[str]] = {v: [] for v in variants}

    def batch(name: str, streams: int) -> tuple[float, float, list[str]]:
        server, url, body, key = variants[name]
        settle(0.2)
        before, started = stack.cpu(server), time.monotonic()
        results = asyncio.run(_sequential([(url, body(), key) for _ in range(streams)]))
        elapsed = time.monotonic() - started
        settle(0.3)
        used = stack.cpu(server) - before
        problems = [p for s in results if (p := _check(s, text))]
        events = sum(len(s.of("content")) for s in results)
        return used / max(events, 1) * 1e6, events / elapsed, problems  # ms per 1,000 events

    for name in variants:  # warm-up: imports, connections, JIT of DynamoDB Local
        batch(name, 1)
    order = list(variants)
    for repeat in range(cfg.cpu_repeats):
        for name in order[repeat % 3 :] + order[: repeat % 3]:  # rotate, so drift hits all alike
            # CPU time is counted in 10 ms ticks: the cheap floor gets more streams for as many ticks.
            streams = cfg.cpu_streams * (FLOOR_STREAMS_FACTOR if name == "floor" else 1)
            cpu, throughput, problems = batch(name, streams)
            cpu_ms[name].append(cpu)
            rate[name].append(throughput)
            errors[name] += problems
    ctx["floor_cpu_per_1k"] = median(cpu_ms["floor"])
    ctx["ours_cpu_per_1k"] = median(cpu_ms["scripted"])
    section = f"1. Server CPU per 1,000 content events ({n} events of {chars} chars per stream)"
    figures = []
    for name, label in (("scripted", "scripted provider"), ("openai", "openai provider, fake upstream")):
        note = (
            f"{cfg.cpu_repeats} repeats x {cfg.cpu_streams} streams (floor: x{FLOOR_STREAMS_FACTOR}); "
            f"throughput ours "
            f"{median(rate[name]):,.0f} events/s vs floor {median(rate['floor']):,.0f} events/s"
        )
        if errors[name] or errors["floor"]:
            note += f"; ERRORS ours {errors[name][:3]} floor {errors['floor'][:3]}"
        figures.append(
            Figure(
                section,
                f"cpu_per_1k_events.{name}",
                f"ours ({label})",
                "ms CPU",
                median(cpu_ms[name]),
                median(cpu_ms["floor"]),
                "floor",
                ratio_max=3,
                target_source="brief",
                note=note,
                samples={"ours": cpu_ms[name], "floor": cpu_ms["floor"]},
            )
        )
    figures.append(
        Figure(
            section,
            "throughput.scripted",
            "throughput, one stream at a time (scripted)",
            "events/s",
            median(rate["scripted"]),
            median(rate["floor"]),
            "floor",
            note="wall-clock, so it moves with the machine's load; read the CPU figures first",
            samples={"ours": rate["scripted"], "floor": rate["floor"], "openai": rate["openai"]},
        )
    )
    return figures


# --- 2. added latency per token under concurrency ------------------------------------------------


def _added_latencies(stream: Stream, sent_at: list[float], chars_per_token: int) -> list[float]:
    arrivals = stream.char_arrivals()
    added = []
    for k, sent in enumerate(sent_at):
        last_char = (k + 1) * chars_per_token - 1
        if last_char < len(arrivals):
            added.append(arrivals[last_char] - sent)
    return added


def latency(stack: Stack, cfg: Config, ctx: dict[str, Any]) -> list[Figure]:
    tokens, chars, pace = cfg.latency_tokens, cfg.delta_chars, cfg.pace_ms
    expected = reply(tokens, chars)
    agent = ctx["openai_agent"]
    targets = {
        "ours": (_chat_url(stack.ours, agent), ADMIN_KEY),
        "floor": (f"{stack.floor}/relay", None),
    }

    def run(name: str, level: int) -> tuple[list[float], list[str]]:
        url, key = targets[name]
        stack.control(stack.upstream, "clear")
        ids = [_bench_id() for _ in range(level)]
        bodies = [
            {"message": "go " + script_marker(id=i, n=tokens, chars=chars, pace_ms=pace), "user_id": "bench"}
            for i in ids
        ]
        streams = asyncio.run(_concurrent([(url, body, key) for body in bodies]))
        records = {r["id"]: r for r in stack.control(stack.upstream, "requests")}
        added: list[float] = []
        problems: list[str] = []
        for i, stream in zip(ids, streams, strict=True):
            problem = _check(stream, expected)
            if problem is None and i not in records:
                problem = "the upstream never saw the request"
            if problem:
                problems.append(problem)
                continue
            added += _added_latencies(stream, records[i]["sent_at"], chars)
        settle(0.5)
        return [a * 1000 for a in added], problems

    for name in targets:  # warm-up
        run(name, 2)
    figures = []
    section = f"2. Added latency per token, one uvicorn worker ({tokens} tokens {pace:g} ms apart per stream)"
    for level in cfg.levels:
        repeats = cfg.single_repeats if level == 1 else cfg.latency_repeats
        p95: dict[str, list[float]] = {"ours": [], "floor": []}
        p99: dict[str, list[float]] = {"ours": [], "floor": []}
        errors: dict[str, list[str]] = {"ours": [], "floor": []}
        for repeat in range(repeats):
            for name in ("ours", "floor") if repeat % 2 == 0 else ("floor", "ours"):
                added, problems = run(name, level)
                p95[name].append(percentile(added, 95))
                p99[name].append(percentile(added, 99))
                errors[name] += problems
        label = "1 stream" if level == 1 else f"{level} streams"
        detail = f"median of {repeats} runs; added = client arrival - upstream send of the token"
        if level == 1:
            figures.append(
                Figure(section, "added_latency.p99.1", f"added p99, {label}", "ms",
                       median(p99["ours"]), median(p99["floor"]), "floor relay", value_max=15,
                       target_source="brief", note=detail,
                       samples={"ours": p99["ours"], "floor": p99["floor"]})
            )  # fmt: skip
        figures.append(
            Figure(section, f"added_latency.p95.{level}", f"added p95, {label}", "ms",
                   median(p95["ours"]), median(p95["floor"]), "floor relay",
                   value_max=50 if level == 100 else None, target_source="brief" if level == 100 else "",
                   note=detail, samples={"ours": p95["ours"], "floor": p95["floor"]})
        )  # fmt: skip
        figures.append(
            Figure(section, f"errors.{level}", f"failed streams, {label}", "streams",
                   float(len(errors["ours"])), float(len(errors["floor"])), "floor relay",
                   value_max=0, target_source="brief" if level == 100 else "harness",
                   note="; ".join(sorted(set(errors["ours"])))[:300])
        )  # fmt: skip
    return figures


# --- 3. store round trips and cost per chat turn -------------------------------------------------


@dataclass
class Turn:
    requests: int
    wcu: float
    rcu: float
    before_model: int
    after_last_token: int
    last_token_to_done_ms: float
    operations: dict[str, int]
    failed_writes: int
    content_events: int
    problem: str | None


def _turn(stack: Stack, url: str, body: dict[str, Any], script_id: str | None) -> Turn:
    stack.control(stack.proxy, "clear")
    stack.control(stack.upstream, "clear")
    stream = asyncio.run(post_sse(url, body, key=ADMIN_KEY))
    settle(1.0)  # the run log's last batch and the run's final status
    log = stack.control(stack.proxy, "log")
    records = [r for r in stack.control(stack.upstream, "requests") if r["id"] == script_id]
    operations: dict[str, int] = {}
    for entry in log:
        operations[entry["op"]] = operations.get(entry["op"], 0) + 1
    from bench.dynamo_proxy import READ_OPERATIONS

    # A failed conditional write still costs write units in DynamoDB; DynamoDB Local does not say how
    # many: count the minimum, 1.
    failed = [e for e in log if e["status"] >= 400 and e["op"] not in READ_OPERATIONS]
    wcu = sum(e["units"] or 0 for e in log if e["op"] not in READ_OPERATIONS) + len(failed)
    rcu = sum(e["units"] or 0 for e in log if e["op"] in READ_OPERATIONS)
    spans = [(e["start"], e["end"]) for e in log]
    before = after = 0
    if records:
        model_call = min(r["received_at"] for r in records)
        before = sequential_trips([s for s in spans if s[0] >= stream.sent_at and s[1] <= model_call])
    contents = stream.of("content")
    done = stream.of("done")
    text_records = [r for r in records if r.get("kind") == "text" and r["sent_at"]]
    gap = math.nan
    if contents and done:
        last_token = text_records[-1]["sent_at"][-1] if text_records else contents[-1].at
        after = sequential_trips([s for s in spans if s[0] >= last_token and s[1] <= done[-1].at])
        gap = (done[-1].at - contents[-1].at) * 1000
    return Turn(
        requests=len(log),
        wcu=wcu,
        rcu=rcu,
        before_model=before,
        after_last_token=after,
        last_token_to_done_ms=gap,
        operations=operations,
        failed_writes=len(failed),
        content_events=len(contents),
        problem=_check(stream, None),
    )


def store(stack: Stack, cfg: Config, ctx: dict[str, Any]) -> list[Figure]:
    tokens, chars = cfg.turn_tokens, cfg.delta_chars
    pace = 1000 / 50  # 50 tokens/s
    tool = {"name": "calculator", "arguments": {"expression": "2+3*4"}}
    agent = stack.create_agent(
        {"name": "bench-turn", "model": {"provider": "openai", "name": "bench"}, "tools": ["calculator"]}
    )
    url = _chat_url(stack.ours_proxied, agent)

    def turn() -> Turn:
        script_id = _bench_id()
        marker = script_marker(id=script_id, n=tokens, chars=chars, pace_ms=pace, tool=tool)
        body = {"message": f"What is 2+3*4? {marker}", "user_id": "bench-user", "session_id": "bench-session"}
        return _turn(stack, url, body, script_id)

    turn()  # warm-up: the session exists and has history from here on, as in a conversation
    turns = [turn() for _ in range(cfg.turns)]
    problems = [t.problem for t in turns if t.problem]

    # The brief's own recipe, with the scripted provider, for comparison.
    scripted = stack.create_agent(
        {
            "name": "bench-turn-scripted",
            "model": {
                "provider": "scripted",
                "name": "s",
                "options": {"reply": reply(tokens, chars), "delta_chars": chars, "delay_ms": pace},
            },
            "tools": ["calculator"],
        }
    )
    scripted_url = _chat_url(stack.ours_proxied, scripted)
    body = {"message": "What is 2+3*4?", "user_id": "bench-user", "session_id": "bench-scripted"}
    _turn(stack, scripted_url, body, None)
    scripted_turns = [_turn(stack, scripted_url, body, None) for _ in range(max(1, (cfg.turns + 1) // 2))]

    wcu = median(t.wcu for t in turns)
    rcu = median(t.rcu for t in turns)
    ops = turns[len(turns) // 2].operations
    section = (
        f"3. Store per chat turn ({tokens} tokens at 50 tok/s, one calculator call; "
        f"DynamoDB on-demand ${PRICE_WRITE}/M write units, ${PRICE_READ}/M read units)"
    )
    common = f"median of {len(turns)} turns of one session, openai provider + fake upstream, memory on"
    if problems:
        common += f"; ERRORS: {problems[:3]}"
    figures = [
        Figure(section, "store.requests", "DynamoDB requests per turn", "requests",
               median(t.requests for t in turns), note=f"{common}; operations: {ops}",
               samples={"ours": [t.requests for t in turns], "operations": [t.operations for t in turns]}),
        Figure(section, "store.wcu", "write units per turn", "WCU", wcu, value_max=12, target_source="brief",
               note=f"failed conditional writes counted as 1 WCU each: {turns[0].failed_writes}",
               samples={"ours": [t.wcu for t in turns]}),
        Figure(section, "store.rcu", "read units per turn", "RCU", rcu, value_max=6, target_source="brief",
               samples={"ours": [t.rcu for t in turns]}),
        Figure(section, "store.cost", "store cost per million turns", "USD",
               wcu * PRICE_WRITE + rcu * PRICE_READ, value_max=12 * PRICE_WRITE + 6 * PRICE_READ,
               target_source="brief (the WCU and RCU targets priced)"),
        Figure(section, "store.sequential_before_model", "sequential store round trips before the model call",
               "round trips", median(t.before_model for t in turns), value_max=2, target_source="brief",
               note="proxy times between request sent and the fake upstream receiving the first model call",
               samples={"ours": [t.before_model for t in turns]}),
        Figure(section, "store.sequential_after_last_token",
               "sequential store round trips, last token -> done",
               "round trips", median(t.after_last_token for t in turns), value_max=1, target_source="brief",
               note="proxy times between the upstream sending the last token and done reaching the client",
               samples={"ours": [t.after_last_token for t in turns]}),
        Figure(section, "store.last_token_to_done", "last token -> done (client-observed)", "ms",
               median(t.last_token_to_done_ms for t in turns)),
        Figure(section, "store.scripted.wcu", "write units per turn, scripted provider (as briefed)", "WCU",
               median(t.wcu for t in scripted_turns),
               note=(f"the scripted provider answers a tool result with 'The result is ...' whatever its "
                     f"reply option says, so this turn streamed only "
                     f"{median(t.content_events for t in scripted_turns):.0f} content events, not {tokens}; "
                     f"RCU {median(t.rcu for t in scripted_turns):g}, "
                     f"requests {median(t.requests for t in scripted_turns):.0f}")),
    ]  # fmt: skip
    return figures


# --- 4. TTFB vs the seed's generate-then-split ---------------------------------------------------


def ttfb(stack: Stack, cfg: Config, ctx: dict[str, Any]) -> list[Figure]:
    n = 70
    pace = 2000 / (n - 1)  # a 2 s answer
    expected = "".join(cjk_pieces(n))
    agent = ctx["openai_agent"]
    targets = {"ours": (_chat_url(stack.ours, agent), ADMIN_KEY), "seed": (f"{stack.floor}/seed", None)}
    first: dict[str, list[float]] = {"ours": [], "seed": []}
    total: dict[str, list[float]] = {"ours": [], "seed": []}
    lost: dict[str, list[float]] = {"ours": [], "seed": []}
    for run in range(cfg.ttfb_runs + 1):
        for name in ("ours", "seed") if run % 2 == 0 else ("seed", "ours"):
            url, key = targets[name]
            body = {"message": "hi " + script_marker(id=_bench_id(), n=n, text="cjk", pace_ms=pace)}
            stream = asyncio.run(post_sse(url, body, key=key))
            if run == 0:
                continue  # warm-up
            at = stream.first_content_at()
            first[name].append((at - stream.sent_at) * 1000 if at else math.nan)
            total[name].append((stream.ended_at - stream.sent_at) * 1000)
            lost[name].append(float(len(expected) - len(stream.content)))
    section = "4. Time to first token on a 2 s answer vs the seed's generate-then-split"
    return [
        Figure(section, "ttfb", "time to first content event", "ms", median(first["ours"]),
               median(first["seed"]), "seed", note=f"median of {cfg.ttfb_runs}; total ms ours "
               f"{median(total['ours']):.0f}, seed {median(total['seed']):.0f}",
               samples={"ours": first["ours"], "seed": first["seed"]}),
        Figure(section, "chars_lost", "characters lost (Chinese, emoji, ZWJ family)", "chars",
               median(lost["ours"]), median(lost["seed"]), "seed", value_max=0,
               target_source="README (text is exact)"),
    ]  # fmt: skip


# --- 5. cold start: imports ------------------------------------------------------------------------

_IMPORT = (
    "import resource, time\n"
    "t = time.perf_counter()\n"
    "import {modules}\n"
    "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
)


def cold_start(stack: Stack, cfg: Config, ctx: dict[str, Any]) -> list[Figure]:
    subjects = {
        "app": "agentstream.app",
        "handler": "agentstream.handlers.stream",
        "baseline": "fastapi, boto3, httpx, mangum",
        "app_otel": "agentstream.app",  # traces on: the OpenTelemetry SDK and exporter come with it
    }
    env = stack.app_env(stack.dynamodb)
    # nothing is sent at import; the endpoint only turns traces on
    otel_env = {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    seconds: dict[str, list[float]] = {k: [] for k in subjects}
    rss: dict[str, list[float]] = {k: [] for k in subjects}
    for repeat in range(cfg.import_repeats + 1):
        for name, modules in subjects.items():
            out = subprocess.run(
                [sys.executable, "-c", _IMPORT.format(modules=modules)],
                env=otel_env if name == "app_otel" else env,
                capture_output=True,
                text=True,
                check=True,
                timeout=120,
                cwd=stack.workdir,
            ).stdout.split()
            if repeat:  # the first round writes bytecode caches
                seconds[name].append(float(out[0]) * 1000)
                rss[name].append(float(out[1]) / 1024)
    section = "5. Cold start: imports in a fresh interpreter (baseline: import fastapi, boto3, httpx, mangum)"
    return [
        Figure(section, "import.app", "import agentstream.app", "ms", median(seconds["app"]),
               median(seconds["baseline"]), "4 imports",
               note=f"max RSS {median(rss['app']):.0f} MB vs {median(rss['baseline']):.0f} MB",
               samples={"ours": seconds["app"], "baseline": seconds["baseline"]}),
        Figure(section, "import.handler", "import agentstream.handlers.stream", "ms",
               median(seconds["handler"]), median(seconds["baseline"]), "4 imports",
               note=f"max RSS {median(rss['handler']):.0f} MB",
               samples={"ours": seconds["handler"]}),
        Figure(section, "import.app_otel", "import agentstream.app, traces on (OTLP endpoint set)", "ms",
               median(seconds["app_otel"]), median(seconds["app"]), "traces off",
               note=f"max RSS {median(rss['app_otel']):.0f} MB; off, nothing of the SDK is imported",
               samples={"ours": seconds["app_otel"], "baseline": seconds["app"]}),
    ]  # fmt: skip


# --- 6. the Lambda path --------------------------------------------------------------------------


def _lambda_event(agent: str, body: dict[str, Any]) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(FUNCTION_URL_EVENT.read_text(encoding="utf-8"))
    path = f"/api/v1/agents/{agent}/chat/stream"
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["rawQueryString"] = ""
    event.pop("queryStringParameters", None)
    event.pop("cookies", None)
    event["headers"]["authorization"] = f"Bearer {ADMIN_KEY}"
    event["body"] = json.dumps(body)
    return event


@dataclass
class Invocation:
    ttft_ms: float
    duration_ms: float
    content_events: int
    problem: str | None


async def _invoke(emulator: Any, event: dict[str, Any], expected: str) -> Invocation:
    started = time.monotonic()
    result = await asyncio.wait_for(emulator.invoke(event), 120)
    ended = time.monotonic()
    events = parse_sse([(chunk.data, chunk.at) for chunk in result.chunks])
    stream = Stream(sent_at=started, status=(result.prelude or {}).get("statusCode", 0), events=events)
    if result.kind != "streamed":
        stream.error = f"answered {result.kind}: {result.body[:200]!r}"
    at = stream.first_content_at()
    return Invocation(
        ttft_ms=(at - started) * 1000 if at else math.nan,
        duration_ms=(ended - started) * 1000,
        content_events=len(stream.of("content")),
        problem=_check(stream, expected),
    )


async def _lambda(stack: Stack, cfg: Config, short: tuple[str, str], long: tuple[str, str]) -> dict[str, Any]:
    from tests.functional.runtime_api_emulator import RuntimeApiEmulator

    firsts: list[Invocation] = []
    warms: list[Invocation] = []
    cpu: list[float] = []
    long_problems: list[str] = []
    task_root = stack.workdir / "lambda-task"
    task_root.mkdir(exist_ok=True)
    short_event = _lambda_event(short[0], {"message": "go"})
    long_event = _lambda_event(long[0], {"message": "go"})
    for cold in range(cfg.lambda_colds):
        async with RuntimeApiEmulator() as emulator:
            env = stack.app_env(
                stack.dynamodb,
                AWS_LAMBDA_RUNTIME_API=emulator.address,
                _HANDLER="agentstream.handlers.stream.handler",
                LAMBDA_TASK_ROOT=str(task_root),
                AWS_LAMBDA_FUNCTION_NAME="agentstream",
                AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
                AWS_LAMBDA_FUNCTION_MEMORY_SIZE="1024",
                AWS_LAMBDA_LOG_GROUP_NAME="/aws/lambda/agentstream",
                AWS_LAMBDA_LOG_STREAM_NAME="bench",
            )
            runtime = stack.spawn(f"lambda-{cold}", [str(BOOTSTRAP), sys.executable], env, cwd=task_root)
            try:
                deadline = time.monotonic() + 60
                while emulator.connections < 1:  # init done: the runtime asks for its first event
                    if runtime.exited() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"the Lambda runtime did not start (log: {runtime.log})")
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.5)
                firsts.append(await _invoke(emulator, short_event, short[1]))
                for _ in range(cfg.lambda_warm):
                    warms.append(await _invoke(emulator, short_event, short[1]))
                if cold == 0:
                    await _invoke(emulator, long_event, long[1])  # warm-up of the long path
                    for _ in range(cfg.cpu_repeats):
                        await asyncio.sleep(0.2)
                        before = cpu_seconds(runtime.pid)
                        outcomes = [
                            await _invoke(emulator, long_event, long[1]) for _ in range(cfg.cpu_streams)
                        ]
                        await asyncio.sleep(0.3)
                        used = cpu_seconds(runtime.pid) - before
                        events = sum(o.content_events for o in outcomes)
                        cpu.append(used / max(events, 1) * 1e6)
                        long_problems += [o.problem for o in outcomes if o.problem]
                emulator.assert_clean()
            finally:
                stack.stop(runtime)
    return {"firsts": firsts, "warms": warms, "cpu": cpu, "long_problems": long_problems}


def lambda_path(stack: Stack, cfg: Config, ctx: dict[str, Any]) -> list[Figure]:
    short_text = reply(50, cfg.delta_chars)
    long_text = reply(cfg.cpu_events, cfg.delta_chars)
    agents = []
    for name, text in (("short", short_text), ("long", long_text)):
        options = {"reply": text, "delta_chars": cfg.delta_chars, "delay_ms": 0}
        agent = stack.create_agent(
            {
                "name": f"bench-lambda-{name}",
                "model": {"provider": "scripted", "name": "s", "options": options},
                "memory": {"enabled": False},
            }
        )
        agents.append((agent, text))
    out = asyncio.run(_lambda(stack, cfg, agents[0], agents[1]))
    firsts: list[Invocation] = out["firsts"]
    warms: list[Invocation] = out["warms"]
    problems = [i.problem for i in firsts + warms if i.problem] + out["long_problems"]
    section = "6. Lambda path: streaming-runtime layer + agentstream.handlers.stream, Runtime API emulator"
    note = (
        f"{cfg.lambda_colds} fresh runtimes, each: 1 first invocation after init, {cfg.lambda_warm} warm; "
        "50 content events, scripted provider, memory off"
    )
    if problems:
        note += f"; ERRORS: {problems[:3]}"
    floor = ctx.get("floor_cpu_per_1k")
    ours_uvicorn = ctx.get("ours_cpu_per_1k")
    return [
        Figure(section, "lambda.first_ttft", "first invocation: time to first content", "ms",
               median(i.ttft_ms for i in firsts), median(i.ttft_ms for i in warms), "warm invocation",
               ratio_max=1.5, target_source="brief", note=note,
               samples={"ours": [i.ttft_ms for i in firsts], "baseline": [i.ttft_ms for i in warms]}),
        Figure(section, "lambda.first_duration", "first invocation: whole invocation", "ms",
               median(i.duration_ms for i in firsts), median(i.duration_ms for i in warms), "warm invocation",
               ratio_max=1.5, target_source="brief",
               samples={"ours": [i.duration_ms for i in firsts], "baseline": [i.duration_ms for i in warms]}),
        Figure(section, "lambda.cpu_per_1k_events", "runtime process CPU per 1,000 content events", "ms CPU",
               median(out["cpu"]), floor, "floor (figure 1)", ratio_max=3,
               target_source="harness (figure 1's target)",
               note=(f"{cfg.cpu_streams} streams x {cfg.cpu_events} events per sample; ours under uvicorn: "
                     f"{ours_uvicorn or math.nan:.1f} ms"),
               samples={"ours": out["cpu"]}),
    ]  # fmt: skip


# --- 7. many streams per Lambda environment (Lambda Managed Instances) ------------------------------

LMI_CADENCE_MS = 30.0


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def _lambda_env(stack: Stack, address: str, task_root: Path, concurrency: int) -> dict[str, str]:
    return stack.app_env(
        stack.dynamodb,
        AWS_LAMBDA_RUNTIME_API=address,
        _HANDLER="agentstream.handlers.stream.handler",
        LAMBDA_TASK_ROOT=str(task_root),
        AWS_LAMBDA_FUNCTION_NAME="agentstream",
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE="2048",
        AWS_LAMBDA_LOG_STREAM_NAME="bench",
        AWS_LAMBDA_MAX_CONCURRENCY=str(concurrency),
    )


async def _initialised(emulator: Any, runtime: Any, slots: int) -> None:
    deadline = time.monotonic() + 60
    while emulator.connections < slots:  # every slot asks for its first event once init is done
        if runtime.exited() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the Lambda runtime did not start (log: {runtime.log})")
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)


def _lag_ms(stream: Stream) -> list[float]:
    """Added latency of each token: how much longer than the provider's 30 ms its gap to the previous
    one was. The scripted provider sleeps 30 ms after each delta, so a token held up by a busy loop
    shows as one long gap (and does not push the tokens after it further behind)."""
    at = [e.at for e in stream.of("content")]
    return [max(0.0, (later - earlier) * 1000 - LMI_CADENCE_MS) for earlier, later in itertools.pairwise(at)]


async def _lmi_level(
    stack: Stack, task_root: Path, event: dict[str, Any], text: str, streams: int
) -> dict[str, Any]:
    from tests.functional.runtime_api_emulator import RuntimeApiEmulator

    async with RuntimeApiEmulator() as emulator:
        env = _lambda_env(stack, emulator.address, task_root, streams)
        runtime = stack.spawn(f"lmi-{streams}", [str(BOOTSTRAP), sys.executable], env, cwd=task_root)
        try:
            await _initialised(emulator, runtime, streams)
            await _invoke(emulator, event, text)  # warm: the first invocation's one-off work
            await asyncio.sleep(0.3)
            idle = _rss_mb(runtime.pid)
            peak = idle
            started = time.monotonic()
            futures = [emulator.invoke(event) for _ in range(streams)]
            pending = asyncio.gather(*futures)
            while not pending.done():
                peak = max(peak, _rss_mb(runtime.pid))
                await asyncio.sleep(0.05)
            results = await pending
            problems, lags = [], []
            for result in results:
                stream = Stream(
                    sent_at=started,
                    status=(result.prelude or {}).get("statusCode", 0),
                    events=parse_sse([(chunk.data, chunk.at) for chunk in result.chunks]),
                )
                if problem := _check(stream, text):
                    problems.append(problem)
                lags += _lag_ms(stream)
            emulator.assert_clean()
        finally:
            stack.stop(runtime)
    return {
        "idle": idle,
        "peak": peak,
        "lags": lags,
        "problems": problems,
        "peak_slots": emulator.peak_outstanding,
    }


async def _forked_rss(stack: Stack, task_root: Path, processes: int) -> float:
    """RSS of one runtime process that imported the handler, as the managed runtime forks per slot."""
    from tests.functional.runtime_api_emulator import RuntimeApiEmulator

    async with RuntimeApiEmulator() as emulator:
        runtimes = []
        try:
            for n in range(processes):
                env = _lambda_env(stack, emulator.address, task_root, 1)
                runtimes.append(
                    stack.spawn(f"lmi-fork-{n}", [str(BOOTSTRAP), sys.executable], env, cwd=task_root)
                )
            deadline = time.monotonic() + 120
            while emulator.connections < processes:
                if time.monotonic() > deadline or any(r.exited() is not None for r in runtimes):
                    raise RuntimeError("a fork-per-slot runtime did not start")
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            return median(_rss_mb(r.pid) for r in runtimes)
        finally:
            for r in runtimes:
                stack.stop(r)


def lmi(stack: Stack, cfg: Config, ctx: dict[str, Any]) -> list[Figure]:
    text = reply(cfg.lmi_tokens, cfg.delta_chars)
    options = {"reply": text, "delta_chars": cfg.delta_chars, "delay_ms": LMI_CADENCE_MS}
    agent = stack.create_agent(
        {"name": "bench-lmi", "model": {"provider": "scripted", "name": "s", "options": options},
         "memory": {"enabled": False}}
    )  # fmt: skip
    event = _lambda_event(agent, {"message": "go"})
    task_root = stack.workdir / "lambda-task"
    task_root.mkdir(exist_ok=True)

    async def run() -> tuple[float, dict[int, dict[str, Any]], dict[str, Any]]:
        forked = await _forked_rss(stack, task_root, cfg.lmi_forks)
        single = await _lmi_level(stack, task_root, event, text, 1)
        return forked, {n: await _lmi_level(stack, task_root, event, text, n) for n in cfg.lmi_levels}, single

    forked, levels, single = asyncio.run(run())
    section = (
        "7. Many streams per Lambda environment: one runtime process, N slots (Lambda Managed Instances)"
    )
    figures = []
    single_p95 = percentile(single["lags"], 95)
    for n, out in levels.items():
        note = (
            f"{n} streams of {cfg.lmi_tokens} tokens {LMI_CADENCE_MS:.0f} ms apart (scripted, memory off); "
            f"RSS idle {out['idle']:.0f} MB, peak {out['peak']:.0f} MB, {out['peak_slots']} in flight; "
            f"fork-per-slot: {n} x {forked:.0f} MB = {n * forked:.0f} MB (median RSS of {cfg.lmi_forks} "
            "runtime processes that imported the handler)"
        )
        if out["problems"]:
            note += f"; ERRORS: {out['problems'][:3]}"
        per_stream = (out["peak"] - out["idle"]) / n
        figures.append(
            Figure(
                section,
                f"lmi.rss_per_stream.{n}",
                f"{n} streams: RSS per extra stream",
                "MB",
                per_stream,
                forked,
                "fork-per-slot (one process per slot)",
                value_max=2.0,
                target_source="brief",
                note=note,
                samples={"idle": out["idle"], "peak": out["peak"], "fork": forked},
            )
        )
        figures.append(
            Figure(
                section,
                f"lmi.added_p95.{n}",
                f"{n} streams: added latency per token, p95",
                "ms",
                percentile(out["lags"], 95),
                single_p95,
                "one stream alone",
                value_max=50.0 if n == max(cfg.lmi_levels) else None,
                target_source="brief" if n == max(cfg.lmi_levels) else "",
                samples={"ours": out["lags"], "baseline": single["lags"]},
            )
        )
    return figures  # fmt: skip


SCENARIOS: list[tuple[str, Callable[[Stack, Config, dict[str, Any]], list[Figure]]]] = [
    ("1", cpu_per_event),
    ("2", latency),
    ("3", store),
    ("4", ttfb),
    ("5", cold_start),
    ("6", lambda_path),
    ("7", lmi),
]


def select(only: str | None) -> list[tuple[str, Callable[[Stack, Config, dict[str, Any]], list[Figure]]]]:
    wanted = {p.strip() for p in (only or "").split(",") if p.strip()}
    return [s for s in SCENARIOS if not wanted or s[0] in wanted]


def cache_dir() -> Path:
    return Path(os.environ.get("BENCH_CACHE_DIR") or ROOT / ".data")
