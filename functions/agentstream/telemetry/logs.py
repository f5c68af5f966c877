"""Log lines: JSON in the aws-lambda-powertools Logger shape in Lambda, readable text elsewhere.

Every line carries ``level``, ``location``, ``message``, ``timestamp`` and ``service``; in Lambda also
``function_request_id`` (and ``xray_trace_id`` when there is one); a line about a run also ``run_id``,
``agent_id`` and ``tenant``. Those come from context variables, so they are per task: the many
invocations a process may serve at once (Lambda Managed Instances, uvicorn) never see each other's.
Fields given with ``extra=`` become keys of the line (the run's summary line uses that).

The streaming-runtime layer writes its own lines before the app is loaded with a formatter of the same
shape (``lambda_streaming/_logging.py``); once loaded, the app formats every line of the process.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentstream.config import Settings

__all__ = ["JsonFormatter", "TextFormatter", "bind_request_id", "bind_run", "configure_logging"]

# run_id, agent_id, tenant of the run the current task works for
_run_fields: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "agentstream_run_fields", default=None
)
# the Lambda request id when no streaming-runtime layer says it (buffered invocations)
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "agentstream_request_id", default=None
)

# the attributes every LogRecord has: anything else on a record was given with ``extra=``
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def bind_run(run_id: str, agent_id: str, tenant: str) -> None:
    """Label the current task's lines (and those of tasks it starts from now on) with this run."""
    _run_fields.set({"run_id": run_id, "agent_id": agent_id, "tenant": tenant})


def bind_request_id(request_id: str | None) -> None:
    _request_id.set(request_id)


def run_fields() -> Mapping[str, str]:
    return _run_fields.get() or {}


def _layer_lookups() -> tuple[Callable[[], str | None], Callable[[], str | None]]:
    """The request id and X-Ray trace id of the current invocation: from the streaming-runtime layer
    when it runs this process (its context variable is per invocation), else what Lambda gives."""
    try:
        from lambda_streaming import current_invocation, trace_id
    except ImportError:
        return _request_id.get, lambda: os.environ.get("_X_AMZN_TRACE_ID")

    def request_id() -> str | None:
        invocation = current_invocation.get(None)
        return invocation.request_id if invocation is not None else _request_id.get()

    return request_id, trace_id


request_id, xray_trace_id = _layer_lookups()


def _timestamp(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, the Powertools Logger's keys first."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "level": record.levelname,
            "location": f"{record.funcName}:{record.lineno}",
            "message": record.getMessage(),
            "timestamp": _timestamp(record.created),
            "service": self.service,
            "logger": record.name,
        }
        if rid := request_id():
            data["function_request_id"] = rid
        if trace := xray_trace_id():
            data["xray_trace_id"] = trace
        data.update(run_fields())
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            data["exception_name"] = type(record.exc_info[1]).__name__
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message [run_id=… agent_id=… tenant=…] key=value…`` for a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = {**run_fields()}
        fields.update(
            (k, v) for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")
        )
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return line


def _in_lambda(settings: Settings) -> bool:
    return settings.lambda_runtime_api is not None


def configure_logging(settings: Settings) -> None:
    """Give the process's lines the right shape; called once, at the app's start-up.

    In Lambda every handler of the root logger (the runtime's) gets the JSON formatter, so the app's,
    the runtime's and the libraries' lines are one shape. Elsewhere, when nobody configured logging
    yet, ``agentstream``'s INFO lines go to stderr (uvicorn's own logs keep their format).
    """
    use_json = settings.log_format == "json" or (settings.log_format is None and _in_lambda(settings))
    formatter: logging.Formatter = JsonFormatter(settings.service_name) if use_json else TextFormatter()
    root = logging.getLogger()
    if _in_lambda(settings) and root.handlers:
        for handler in root.handlers:
            handler.setFormatter(formatter)
        return
    if root.handlers:
        return  # someone (a test harness, an embedding program) configured logging: theirs
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    level = os.environ.get("AWS_LAMBDA_LOG_LEVEL", "").upper()
    if _in_lambda(settings):
        root.setLevel(level if level in logging.getLevelNamesMapping() else logging.INFO)
    else:
        logging.getLogger("agentstream").setLevel(logging.INFO)
