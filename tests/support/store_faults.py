"""Faults injected into DynamoDB through botocore's event hooks, for tests that need a misbehaving store.

Nothing here knows the app's store code: `install()` wraps ``botocore.session.Session.create_client``
(which ``boto3.client`` and every boto3 session go through), so each DynamoDB client created afterwards
carries the hooks. Only the wire shape matters: an item whose sort key ``sk`` starts with ``EV#`` is a
run-log item, however it is written (PutItem, BatchWriteItem or TransactWriteItems).

- ``fail_ev_writes = N``: the first N API calls that write ``EV#`` items fail with ``InternalServerError``
  (raised before the request is sent, so nothing of them is stored and botocore does not retry them:
  to the app it is a write that failed for good).
- ``latency_s``: every DynamoDB API call waits this long before it is sent (a slow store).
- ``throttle_ops``: calls of these operations (e.g. ``UpdateItem``) wait ``throttle_s``, then fail with
  ``ProvisionedThroughputExceededException``: a store that throttles them through all its retries.

Every injected fault is logged to stderr as one ``store_faults:`` line, so a test can check it fired.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["StoreFaults", "install", "writes_run_log"]

ENV_FAIL_EV_WRITES = "AGENTSTREAM_TEST_FAIL_EV_WRITES"
ENV_LATENCY_MS = "AGENTSTREAM_TEST_STORE_LATENCY_MS"
ENV_THROTTLE_OPS = "AGENTSTREAM_TEST_THROTTLE_OPS"  # comma-separated operation names
ENV_THROTTLE_MS = "AGENTSTREAM_TEST_THROTTLE_MS"
RUN_LOG_PREFIX = "EV#"


def _sort_keys(operation: str, params: Mapping[str, Any]) -> Iterator[str]:
    """The ``sk`` of every item this write call puts or updates."""

    def sk(item: Any) -> str:
        value = item.get("sk") if isinstance(item, Mapping) else None
        return str(value.get("S", "")) if isinstance(value, Mapping) else ""

    if operation in ("PutItem", "UpdateItem", "DeleteItem"):
        yield sk(params.get("Item") or params.get("Key") or {})
    elif operation == "BatchWriteItem":
        for requests in (params.get("RequestItems") or {}).values():
            for request in requests:
                yield sk((request.get("PutRequest") or {}).get("Item") or {})
    elif operation == "TransactWriteItems":
        for entry in params.get("TransactItems") or []:
            for kind, body in entry.items():
                if kind in ("Put", "Update", "Delete"):
                    yield sk(body.get("Item") or body.get("Key") or {})


def writes_run_log(operation: str, params: Mapping[str, Any]) -> bool:
    """Whether this call writes at least one run-log item (sort key ``EV#...``)."""
    return operation != "DeleteItem" and any(
        key.startswith(RUN_LOG_PREFIX) for key in _sort_keys(operation, params)
    )


@dataclass
class StoreFaults:
    fail_ev_writes: int = 0
    latency_s: float = 0.0
    throttle_ops: frozenset[str] = frozenset()
    throttle_s: float = 0.0
    failed: int = 0  # run-log writes failed so far
    delayed: int = 0  # calls delayed so far
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> StoreFaults:
        return cls(
            fail_ev_writes=int(env.get(ENV_FAIL_EV_WRITES) or 0),
            latency_s=float(env.get(ENV_LATENCY_MS) or 0) / 1000,
            throttle_ops=frozenset(op for op in (env.get(ENV_THROTTLE_OPS) or "").split(",") if op),
            throttle_s=float(env.get(ENV_THROTTLE_MS) or 0) / 1000,
        )

    @property
    def active(self) -> bool:
        return self.fail_ev_writes > 0 or self.latency_s > 0 or bool(self.throttle_ops)

    def before_parameter_build(self, params: Mapping[str, Any], model: Any, **_: Any) -> None:
        """Runs once per API call (not per retry), before the request is built."""
        operation = str(model.name)
        if self.latency_s > 0:
            with self._lock:
                self.delayed += 1
                count = self.delayed
            _log(f"delaying {operation} by {self.latency_s:.3f} s (call {count})")
            time.sleep(self.latency_s)
        if operation in self.throttle_ops:
            from botocore.exceptions import ClientError

            _log(f"throttling {operation} for {self.throttle_s:.3f} s")
            time.sleep(self.throttle_s)
            error = {"Code": "ProvisionedThroughputExceededException", "Message": "store_faults: throttled"}
            raise ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": 400}}, operation)
        if self.fail_ev_writes > 0 and writes_run_log(operation, params):
            with self._lock:
                fail = self.failed < self.fail_ev_writes
                if fail:
                    self.failed += 1
                count = self.failed
            if fail:
                from botocore.exceptions import ClientError

                _log(f"failing run-log write {count}/{self.fail_ev_writes} ({operation})")
                error = {"Code": "InternalServerError", "Message": "store_faults: injected failure"}
                raise ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": 500}}, operation)


def _log(message: str) -> None:
    print(f"store_faults: {message}", file=sys.stderr, flush=True)


def install(faults: StoreFaults) -> Callable[[], None]:
    """Hook ``faults`` into every DynamoDB client created from now on; returns the undo function."""
    import botocore.session

    original = botocore.session.Session.create_client

    def create_client(self: Any, service_name: str, *args: Any, **kwargs: Any) -> Any:
        client = original(self, service_name, *args, **kwargs)
        if service_name == "dynamodb":
            client.meta.events.register("before-parameter-build.dynamodb", faults.before_parameter_build)
        return client

    botocore.session.Session.create_client = create_client  # type: ignore[method-assign]

    def undo() -> None:
        botocore.session.Session.create_client = original  # type: ignore[method-assign]

    return undo
