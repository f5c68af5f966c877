"""Log lines: the Powertools shape, per-task run context, one summary per run, no keys or message text."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentstream.config import Settings
from agentstream.core.agents import Agent, ModelConfig
from agentstream.core.service import ChatInput, ChatService
from agentstream.handlers import api, stream
from agentstream.telemetry import build_telemetry
from agentstream.telemetry.logs import JsonFormatter, bind_run, run_fields
from lambda_streaming import _logging as runtime_logging
from lambda_streaming.context import Invocation, current_invocation
from tests.conftest import load_event
from tests.support.memory_store import MemoryStore
from tests.unit.handlers.lambda_contexts import PlainContext

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[3]
SECRET_MESSAGE = "my secret is swordfish, what is 2+3*4"
REQUIRED = {"level", "location", "message", "timestamp", "service"}


class Lines(logging.Handler):
    """Every record of the ``agentstream`` loggers, formatted by the app's JSON formatter, parsed."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter("agentstream"))
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        self.raw.append(text)
        self.lines.append(json.loads(text))


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    logger = logging.getLogger("agentstream")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def _record(message: str = "hello %s", *args: Any, **extra: Any) -> logging.LogRecord:
    record = logging.getLogger("agentstream.test").makeRecord(
        "agentstream.test", logging.WARNING, __file__, 42, message, args or ("world",), None, "f", extra
    )
    return record


def test_a_line_has_the_powertools_keys_and_the_extras() -> None:
    # in a context of its own: outside any invocation (a buffered handler called earlier binds its id)
    text = contextvars.Context().run(JsonFormatter("svc").format, _record(status="completed", ttft_ms=12))
    line = json.loads(text)
    assert line.keys() >= REQUIRED
    assert (line["level"], line["message"], line["service"], line["location"]) == (
        "WARNING",
        "hello world",
        "svc",
        "f:42",
    )
    assert line["timestamp"].endswith("Z")
    assert (line["status"], line["ttft_ms"]) == ("completed", 12)
    assert "function_request_id" not in line  # outside an invocation


def test_an_exception_is_named_and_kept_in_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    text = JsonFormatter("svc").format(record)
    assert "\n" not in text
    line = json.loads(text)
    assert line["exception_name"] == "ValueError"
    assert "boom" in line["exception"]


async def test_the_run_fields_belong_to_the_task_not_the_process() -> None:
    formatter = JsonFormatter("svc")
    seen: dict[str, list[dict[str, Any]]] = {}

    async def run(run_id: str) -> None:
        bind_run(run_id, f"agt_{run_id}", f"tenant_{run_id}")
        for _ in range(3):
            await asyncio.sleep(0.001)  # interleave with the other runs
            seen.setdefault(run_id, []).append(json.loads(formatter.format(_record())))

    before = dict(run_fields())
    await asyncio.gather(*(run(f"run_{i}") for i in range(5)))
    for run_id, lines in seen.items():
        assert {(x["run_id"], x["agent_id"], x["tenant"]) for x in lines} == {
            (run_id, f"agt_{run_id}", f"tenant_{run_id}")
        }
    # what the runs bound stayed theirs: this task's context is as it was
    assert dict(run_fields()) == before


async def test_the_app_and_the_runtime_write_the_same_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "svc")
    invocation = Invocation("req-1", 0, "arn", "Root=1-5759e988-bd862e3fe1be46a994272793", None, None, b"")

    async def inside() -> tuple[dict[str, Any], dict[str, Any]]:
        current_invocation.set(invocation)
        record = _record(status="completed")
        app = json.loads(JsonFormatter("svc").format(record))
        runtime = json.loads(runtime_logging._JsonFormatter().format(record))
        return app, runtime

    app, runtime = await asyncio.create_task(inside())
    assert app == runtime
    assert app["function_request_id"] == "req-1"
    assert app["xray_trace_id"] == "Root=1-5759e988-bd862e3fe1be46a994272793"


def _agent_store(**options: Any) -> MemoryStore:
    store = MemoryStore()
    model = ModelConfig(provider="scripted", name="s", options={"delay_ms": 1, **options})
    store.agents.items[("t", "agt_1")] = Agent(
        id="agt_1", name="calc", model=model, tools=["calculator"], created_at="", updated_at=""
    )
    return store


async def _run(settings: Settings, message: str = SECRET_MESSAGE, **options: Any) -> None:
    chat = ChatService(_agent_store(**options), settings, telemetry=build_telemetry(settings))
    run = await chat.start("t", "agt_1", ChatInput(message, user_id="u"))
    async for _ in run.events():
        pass
    await run.wait()


async def test_a_run_logs_its_start_its_tool_and_one_summary_without_message_text(lines: Lines) -> None:
    await _run(Settings(log_flush_seconds=0.05, heartbeat_seconds=0.05))
    about_run = [x for x in lines.lines if "run_id" in x]
    assert [x["message"] for x in about_run] == ["run started", "tool called", "run finished"]
    assert {(x["agent_id"], x["tenant"]) for x in about_run} == {("agt_1", "t")}
    (summary,) = [x for x in lines.lines if x["message"] == "run finished"]
    assert summary["status"] == "completed"
    assert summary["steps"] == 2
    assert summary["tool_calls"] == 1
    assert isinstance(summary["ttft_ms"], int)
    assert isinstance(summary["duration_ms"], int)
    assert summary["input_tokens"] > 0
    assert summary["output_tokens"] > 0
    assert "gap_p95_ms" in summary
    assert "error_code" not in summary
    text = "\n".join(lines.raw)
    assert "swordfish" not in text
    assert "The result is 14" not in text  # the reply
    assert "2+3*4" not in text  # the tool's arguments


async def test_log_content_puts_the_reply_and_the_tool_arguments_in(lines: Lines) -> None:
    await _run(Settings(log_flush_seconds=0.05, heartbeat_seconds=0.05, log_content=True))
    text = "\n".join(lines.raw)
    assert "The result is 14" in text
    assert "2+3*4" in text


async def test_a_failed_run_says_its_error_code(lines: Lines) -> None:
    await _run(Settings(log_flush_seconds=0.05, heartbeat_seconds=0.05), "hello", fail_after=1)
    (summary,) = [x for x in lines.lines if x["message"] == "run finished"]
    assert summary["status"] == "error"
    assert summary["error_code"].startswith("upstream")


CONFIGURE = """
import json, logging, sys
from agentstream.config import Settings
from agentstream.telemetry import configure_logging
{before}
configure_logging(Settings())
logging.getLogger("agentstream.x").info("from the app")
logging.getLogger("lambda_streaming").warning("from the runtime")
"""


def _configure(env: dict[str, str], before: str = "") -> list[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AGENTSTREAM_"))}
    environment.update(env)
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "functions"), str(ROOT), str(ROOT / "layers/streaming-runtime/python")]
    )
    done = subprocess.run(
        [sys.executable, "-c", CONFIGURE.format(before=before)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=True,
    )
    return done.stderr.splitlines()


def test_in_lambda_every_line_of_the_process_is_json_even_under_a_text_runtime() -> None:
    # the runtime set up its text handler before loading the app; the app makes it JSON
    before = "from lambda_streaming._logging import setup_logging; setup_logging()"
    out = _configure({"AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9", "AWS_LAMBDA_LOG_FORMAT": "Text"}, before)
    parsed = [json.loads(line) for line in out]
    assert [x["message"] for x in parsed] == ["from the app", "from the runtime"]
    assert all(x.keys() >= REQUIRED for x in parsed)


def test_outside_lambda_the_app_logs_readable_text_unless_asked_for_json() -> None:
    text = _configure({})
    assert len(text) == 2
    assert "INFO agentstream.x: from the app" in text[0]
    assert "WARNING lambda_streaming: from the runtime" in text[1]
    as_json = _configure({"AGENTSTREAM_LOG_FORMAT": "json"})
    assert json.loads(as_json[0])["message"] == "from the app"


async def _logging_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app that logs one line."""
    logging.getLogger("agentstream.test.buffered").warning("inside the app")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize("entry", [api, stream])
def test_buffered_invocations_label_their_lines_with_the_request_id(entry: Any, lines: Lines) -> None:
    """Without the streaming-runtime layer (the managed runtime, sam local) the handler tells the id."""
    response = entry.make_handler(_logging_app)(load_event("http_api_v2.json"), PlainContext())
    assert response["statusCode"] == 200
    assert [x["function_request_id"] for x in lines.lines] == [PlainContext.aws_request_id]
