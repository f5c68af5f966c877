"""Lambda-style logs: every record carries the request id of the invocation that wrote it.

Formats follow the managed Python runtime: text ``[LEVEL]\\t<time>Z\\t<request id>\\t<message>`` or, with
``AWS_LAMBDA_LOG_FORMAT=JSON``, one JSON object per record in the aws-lambda-powertools Logger shape
(``level``, ``location``, ``message``, ``timestamp``, ``service``, ``logger``, ``function_request_id``,
``xray_trace_id``, fields given with ``extra=``, ``exception_name`` + ``exception``), so that an app
which formats its own lines that way (agentstream does) and the runtime write one shape. Records go
to stderr; in text mode newlines become carriage returns so that CloudWatch keeps a traceback in one
record, as the managed runtime does.
``START``/``END``/``REPORT`` lines are written by the platform, not here.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from typing import Any

from .context import current_invocation, trace_id

__all__ = ["error_record", "log_invocation_error", "setup_logging"]

logger = logging.getLogger("lambda_streaming")


def _request_id() -> str:
    invocation = current_invocation.get(None)
    return invocation.request_id if invocation is not None else ""


def _timestamp(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


def _json_mode() -> bool:
    return os.environ.get("AWS_LAMBDA_LOG_FORMAT", "").upper() == "JSON"


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record).replace("\n", "\r")
        return f"[{record.levelname}]\t{_timestamp(record.created)}\t{_request_id()}\t{message}"


# the attributes every LogRecord has: anything else on a record was given with ``extra=``
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def _service() -> str:
    for name in ("POWERTOOLS_SERVICE_NAME", "OTEL_SERVICE_NAME", "AWS_LAMBDA_FUNCTION_NAME"):
        if value := os.environ.get(name):
            return value
    return "service_undefined"


class _JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self.service = _service()

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "level": record.levelname,
            "location": f"{record.funcName}:{record.lineno}",
            "message": record.getMessage(),
            "timestamp": _timestamp(record.created),
            "service": self.service,
            "logger": record.name,
        }
        if request_id := _request_id():
            data["function_request_id"] = request_id
        if trace := trace_id():
            data["xray_trace_id"] = trace
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            data["exception_name"] = type(record.exc_info[1]).__name__
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, ensure_ascii=False)


def setup_logging() -> None:
    """Give the root logger a Lambda-style stderr handler, unless the app configured one already."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if _json_mode() else _TextFormatter())
    root.addHandler(handler)
    level = os.environ.get("AWS_LAMBDA_LOG_LEVEL", "").upper()
    root.setLevel(level if level in logging.getLevelNamesMapping() else logging.INFO)


def error_record(exc: BaseException) -> dict[str, Any]:
    """The Runtime API's error document: errorMessage, errorType, stackTrace (and requestId)."""
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "requestId": _request_id(),
        "stackTrace": traceback.format_list(traceback.extract_tb(exc.__traceback__)),
    }


def log_invocation_error(error: dict[str, Any]) -> None:
    """Write an error that ends an invocation (or the init) the way the managed runtime does."""
    if _json_mode():
        line = json.dumps(
            {"timestamp": _timestamp(time.time()), "level": "ERROR", **error}, default=str, ensure_ascii=False
        )
    else:
        trace = "".join(error.get("stackTrace") or [])
        message = (
            f"{error['errorType']}: {error['errorMessage']}\nTraceback (most recent call last):\n{trace}"
        )
        message = message.rstrip("\n").replace("\n", "\r")
        line = f"[ERROR]\t{_timestamp(time.time())}\t{_request_id()}\t{message}"
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
