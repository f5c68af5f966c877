"""EMF blobs: valid against the specification, one per finished run, the contract's names and units."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agentstream.config import Settings
from agentstream.core.agents import Agent, ModelConfig
from agentstream.core.events import Done, DoneStatus, Usage
from agentstream.core.service import ChatInput, ChatService
from agentstream.core.telemetry import RunInfo
from agentstream.telemetry import build_telemetry
from agentstream.telemetry.metrics import replay_blob, run_blob
from tests.support.emf import emf_blobs, validate
from tests.support.memory_store import MemoryStore

pytestmark = pytest.mark.anyio

INFO = RunInfo("run_1", "acme", "agt_1", "helper", "openai", "gpt-x", "default")
METRICS = {
    "ttft_ms": 180,
    "duration_ms": 1210,
    "content_events": 9,
    "output_tokens_per_s": 12.5,
    "gap_p50_ms": 20.1,
    "gap_p95_ms": 41.0,
}


def _done(status: DoneStatus = "completed", **changes: Any) -> Done:
    values: dict[str, Any] = {
        "status": status,
        "final_response": "secret reply",
        "total_steps": 2,
        "usage": Usage(96, 12),
        "metrics": dict(METRICS),
        **changes,
    }
    return Done(**values)


def _units(blob: dict[str, Any]) -> dict[str, str]:
    return {m["Name"]: m["Unit"] for d in blob["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}


def test_a_completed_run_has_the_contract_metrics_with_their_units() -> None:
    blob = run_blob("agentstream", "agentstream", INFO, _done(), tool_calls=1)
    validate(blob)
    units = _units(blob)
    assert units["TimeToFirstToken"] == units["RunDuration"] == "Milliseconds"
    assert units["InputTokens"] == units["OutputTokens"] == "Count"
    assert "OutputTokensPerSecond" in units
    assert (blob["TimeToFirstToken"], blob["RunDuration"], blob["InputTokens"], blob["OutputTokens"]) == (
        180,
        1210,
        96,
        12,
    )
    assert (blob["OutputTokensPerSecond"], blob["InterChunkGapP95"], blob["ToolCalls"]) == (12.5, 41.0, 1)
    assert blob["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "agentstream"
    dimension_sets = [s for d in blob["_aws"]["CloudWatchMetrics"] for s in d["Dimensions"]]
    assert dimension_sets == [["service", "provider", "status"], ["service"]]
    assert (blob["service"], blob["provider"], blob["status"]) == ("agentstream", "openai", "completed")
    assert (blob["Runs"], blob["Errors"], blob["Cancellations"], blob["Timeouts"]) == (1, 0, 0, 0)
    # the run's ids ride along for Logs Insights; no message text
    assert (blob["run_id"], blob["agent_id"], blob["tenant"]) == ("run_1", "agt_1", "acme")
    assert "secret reply" not in str(blob)


def test_a_failed_run_counts_its_error_by_code() -> None:
    blob = run_blob("ns", "svc", INFO, _done("error", error_code="rate_limited"))
    validate(blob)
    assert blob["Errors"] == 1
    assert blob["error_code"] == "rate_limited"
    by_code = blob["_aws"]["CloudWatchMetrics"][-1]
    assert by_code["Dimensions"] == [["service", "error_code"]]
    assert by_code["Metrics"] == [{"Name": "Errors", "Unit": "Count"}]


@pytest.mark.parametrize(("status", "counter"), [("cancelled", "Cancellations"), ("timeout", "Timeouts")])
def test_cancellations_and_timeouts_are_counted(status: DoneStatus, counter: str) -> None:
    blob = run_blob("ns", "svc", INFO, _done(status))
    validate(blob)
    assert blob[counter] == 1
    assert blob["Errors"] == 0
    assert "error_code" not in blob


def test_a_run_without_text_leaves_out_what_it_could_not_measure() -> None:
    metrics = {
        **METRICS,
        "ttft_ms": None,
        "output_tokens_per_s": None,
        "gap_p50_ms": None,
        "gap_p95_ms": None,
    }
    blob = run_blob("ns", "svc", INFO, _done("error", metrics=metrics, error_code="upstream_error"))
    validate(blob)
    assert "TimeToFirstToken" not in _units(blob)
    assert "TimeToFirstToken" not in blob
    # a cancelled task (no Done at all) still counts
    blob = run_blob("ns", "svc", INFO, None)
    validate(blob)
    assert (blob["status"], blob["Cancellations"]) == ("cancelled", 1)


def test_a_resume_is_counted() -> None:
    blob = replay_blob("ns", "svc", "run_1", {"function_request_id": "r"})
    validate(blob)
    assert blob["Resumes"] == 1


@pytest.mark.parametrize(
    "breakage",
    [
        lambda b: b["_aws"].pop("Timestamp"),
        lambda b: b["_aws"]["CloudWatchMetrics"][0].update(Extra=1),
        lambda b: b["_aws"]["CloudWatchMetrics"][0]["Metrics"].append({"Name": "X", "Unit": "Tokens"}),
        lambda b: b.pop("provider"),  # a dimension without its value
        lambda b: b.update(RunDuration="1210"),  # a metric that is not a number
        lambda b: b["_aws"]["CloudWatchMetrics"][0]["Dimensions"].append([f"d{i}" for i in range(31)]),
    ],
)
def test_the_validator_rejects_what_the_specification_forbids(breakage: Any) -> None:
    blob = copy.deepcopy(run_blob("ns", "svc", INFO, _done()))
    breakage(blob)
    with pytest.raises((jsonschema.ValidationError, AssertionError)):
        validate(blob)


async def test_a_run_writes_exactly_one_valid_blob_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    store = MemoryStore()
    model = ModelConfig(provider="scripted", name="s", options={"delay_ms": 1})
    store.agents.items[("t", "agt_1")] = Agent(
        id="agt_1", name="calc", model=model, tools=["calculator"], created_at="", updated_at=""
    )
    settings = Settings(
        log_flush_seconds=0.05, heartbeat_seconds=0.05, metrics_enabled=True, metrics_namespace="Custom/NS"
    )
    chat = ChatService(store, settings, telemetry=build_telemetry(settings))
    run = await chat.start("t", "agt_1", ChatInput("what is 2+3*4", user_id="u"))
    async for _ in run.events():
        pass
    await run.wait()
    (blob,) = emf_blobs(capsys.readouterr().out.splitlines())
    validate(blob)
    assert blob["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Custom/NS"
    assert (blob["run_id"], blob["status"], blob["Steps"], blob["ToolCalls"]) == (
        run.run_id,
        "completed",
        2,
        1,
    )
    assert run.done is not None
    assert blob["RunDuration"] == run.done.metrics["duration_ms"]


@pytest.mark.parametrize(
    ("values", "blobs"),
    [
        ({}, 0),  # outside Lambda, stdout is a terminal's: only when asked for
        ({"lambda_runtime_api": "127.0.0.1:9001"}, 1),  # in Lambda, stdout is the log group
        ({"lambda_runtime_api": "127.0.0.1:9001", "metrics_enabled": False}, 0),
        ({"metrics_enabled": True}, 1),
    ],
)
async def test_metrics_are_on_in_lambda_and_where_asked_for(
    capsys: pytest.CaptureFixture[str], values: dict[str, Any], blobs: int
) -> None:
    store = MemoryStore()
    store.agents.items[("t", "agt_1")] = Agent(
        id="agt_1", name="a", model=ModelConfig(provider="scripted", name="s"), created_at="", updated_at=""
    )
    settings = Settings(log_flush_seconds=0.05, heartbeat_seconds=0.05, **values)
    chat = ChatService(store, settings, telemetry=build_telemetry(settings))
    run = await chat.start("t", "agt_1", ChatInput("hi"))
    async for _ in run.events():
        pass
    await run.wait()
    assert len(emf_blobs(capsys.readouterr().out.splitlines())) == blobs


def test_the_dashboard_in_docs_graphs_metrics_the_blobs_have() -> None:
    dashboard = json.loads((Path(__file__).resolve().parents[3] / "docs" / "dashboard.json").read_text())
    run = run_blob("agentstream", "svc", INFO, _done("error", error_code="x"), tool_calls=1)
    emitted: dict[str, set[frozenset[str]]] = {}
    for blob in (run, replay_blob("agentstream", "svc", "run_1")):
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                for dims in directive["Dimensions"]:
                    emitted.setdefault(metric["Name"], set()).add(frozenset(dims))
    searches = [
        m["expression"]
        for w in dashboard["widgets"]
        for line in w["properties"]["metrics"]
        for m in line
        if isinstance(m, dict) and "expression" in m
    ]
    assert searches
    for expression in searches:
        match = re.search(r"\{agentstream,([a-z_,]+)\} MetricName=\"(\w+)\"", expression)
        assert match is not None, expression
        dims, name = frozenset(match.group(1).split(",")), match.group(2)
        assert dims in emitted.get(name, set()), expression
