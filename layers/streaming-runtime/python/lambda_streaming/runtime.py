"""The runtime loop: load the handler, take invocations from the Runtime API, answer them.

One coroutine per invocation slot on one asyncio loop (``AWS_LAMBDA_MAX_CONCURRENCY`` slots, 1 by
default). Each slot owns a keep-alive connection to the Runtime API and a one-thread executor that calls
the (synchronous) handler, so the handler never blocks the loop and always runs on the same thread for
that slot (libraries that keep a per-thread event loop, like Mangum, stay happy). Each invocation runs in
its own ``contextvars.Context`` with ``current_invocation`` set.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import functools
import importlib
import inspect
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ._http import Connection, RuntimeApiError
from ._logging import error_record, log_invocation_error, setup_logging
from .context import Invocation, LambdaContext, current_invocation

__all__ = ["InitError", "InvocationTimeout", "Runtime", "load_handler", "main"]

logger = logging.getLogger("lambda_streaming")

API = "/2018-06-01/runtime"
# The response headers of the streaming protocol; Transfer-Encoding: chunked is added by the connection.
STREAM_HEADERS = {
    "Lambda-Runtime-Function-Response-Mode": "streaming",
    "Trailer": "Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body",
    "Content-Type": "application/vnd.awslambda.http-integration-response",
}
PRELUDE_DELIMITER = b"\0" * 8

Handler = Callable[[Any, LambdaContext], Any]


class InitError(Exception):
    """The handler could not be loaded; ``error_type`` follows the managed runtime's names."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


def load_handler(spec: str, task_root: str) -> Handler:
    """Import ``module.function`` (``_HANDLER``) with ``task_root`` first on ``sys.path``."""
    if task_root and task_root not in sys.path:
        sys.path.insert(0, task_root)
    module_name, sep, function_name = spec.rpartition(".")
    if not sep or not module_name or not function_name:
        raise InitError("Runtime.MalformedHandlerName", f"Bad handler '{spec}': expected module.function")
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except SyntaxError as exc:
        raise InitError(
            "Runtime.UserCodeSyntaxError", f"Syntax error in module '{module_name}': {exc}"
        ) from exc
    except ImportError as exc:
        raise InitError(
            "Runtime.ImportModuleError", f"Unable to import module '{module_name}': {exc}"
        ) from exc
    handler = getattr(module, function_name, None)
    if not callable(handler):
        raise InitError(
            "Runtime.HandlerNotFound", f"Handler '{function_name}' missing on module '{module_name}'"
        )
    return handler  # type: ignore[no-any-return]


def pad_sse(chunk: bytes, size: int) -> bytes:
    """Grow a chunk that ends a line to ``size`` bytes with an SSE comment line (ignored by clients)."""
    missing = size - len(chunk) - 2
    if missing < 0 or not chunk.endswith(b"\n"):
        return chunk
    return chunk + b":" + b" " * missing + b"\n"


def _is_event_stream(prelude: dict[str, Any]) -> bool:
    values: list[Any] = []
    for key in ("headers", "multiValueHeaders"):
        for name, value in (prelude.get(key) or {}).items():
            if name.lower() == "content-type":
                values += value if isinstance(value, list) else [value]
    return any(str(value).lower().startswith("text/event-stream") for value in values)


class _Clock:
    """When one invocation must end: its deadline, or sooner once the runtime is shutting down.

    `wait` bounds one await of the handler's code (its call, each item of its stream) by that time; the
    runtime's own writes to the Runtime API are never cut, so an answer is always well-formed.
    """

    def __init__(self, when: float | None) -> None:
        self.when = when
        self.reason = "the invocation reached its deadline"
        self._scope: asyncio.Timeout | None = None

    def cut(self, when: float, reason: str) -> None:
        if self.when is None or when < self.when:
            self.when, self.reason = when, reason
            if self._scope is not None:
                self._scope.reschedule(when)

    async def wait(self, awaitable: Awaitable[Any]) -> Any:
        async with asyncio.timeout_at(self.when) as scope:
            self._scope = scope
            try:
                return await awaitable
            finally:
                self._scope = None


class InvocationTimeout(TimeoutError):
    """The handler was still at work when its invocation had to end (deadline or shutdown)."""


class _Slot:
    """One invocation slot: its Runtime API connection and the thread that calls the handler."""

    def __init__(self, number: int, address: str) -> None:
        self.number = number
        self.connection = Connection(address)
        self.executor = self._new_executor()
        self.polling: asyncio.Future[Any] | None = None

    def _new_executor(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"lambda-slot-{self.number}")

    def abandon_thread(self) -> None:
        """The handler's thread is stuck in a call that timed out: leave it, give the slot a new one."""
        self.executor.shutdown(wait=False)
        self.executor = self._new_executor()


class Runtime:
    """Serves ``concurrency`` invocations at once, one coroutine per slot, until the Runtime API goes
    away or `stop` is called (SIGTERM)."""

    def __init__(
        self,
        address: str,
        handler: Handler,
        *,
        concurrency: int = 1,
        sse_pad_bytes: int = 0,
        shutdown_grace_seconds: float = 2.0,
    ) -> None:
        self.address = address
        self.handler = handler
        self.concurrency = concurrency
        self.sse_pad_bytes = sse_pad_bytes
        self.shutdown_grace_seconds = shutdown_grace_seconds
        self.stopping = False
        self._slots: list[_Slot] = []
        self._clocks: set[_Clock] = set()

    async def run(self) -> None:
        """Serve invocations until the Runtime API goes away, or until `stop` and the drain after it."""
        self._slots = [_Slot(number, self.address) for number in range(self.concurrency)]
        try:
            await asyncio.gather(*(self._serve(slot) for slot in self._slots))
        finally:
            for slot in self._slots:
                slot.executor.shutdown(wait=False)
                await slot.connection.close()

    def stop(self) -> None:
        """Take no new invocation; give those in flight `shutdown_grace_seconds` to finish, then cut them
        (a stream ends with the error trailers, a call gets an error), and let `run` return."""
        if self.stopping:
            return
        self.stopping = True
        logger.info("shutting down: %d invocation(s) in flight", len(self._clocks))
        for slot in self._slots:
            if slot.polling is not None:
                slot.polling.cancel()
        when = asyncio.get_running_loop().time() + self.shutdown_grace_seconds
        for clock in self._clocks:
            clock.cut(when, "the runtime shut down before the invocation ended")

    async def _serve(self, slot: _Slot) -> None:
        while not self.stopping:
            slot.polling = asyncio.ensure_future(slot.connection.request("GET", f"{API}/invocation/next"))
            try:
                response = await slot.polling
            except asyncio.CancelledError:
                if self.stopping:
                    return
                raise
            finally:
                slot.polling = None
            if response.status != 200:
                raise RuntimeApiError(f"/invocation/next answered {response.status}: {response.body!r}")
            invocation = Invocation.from_next(response.headers, response.body)
            task = asyncio.create_task(self._invoke(slot, invocation), context=contextvars.Context())
            try:
                await task
            except RuntimeApiError as exc:
                logger.error("lost the Runtime API while answering %s: %s", invocation.request_id, exc)
            except Exception:
                # A bug of the runtime itself must not take the other slots down with this one.
                logger.exception("the runtime failed while answering %s", invocation.request_id)

    def _clock(self, invocation: Invocation) -> _Clock:
        loop = asyncio.get_running_loop()
        when = None
        if invocation.deadline_ms:
            when = loop.time() + invocation.deadline_ms / 1000 - time.time()
        clock = _Clock(when)
        if self.stopping:
            clock.cut(loop.time() + self.shutdown_grace_seconds, "the runtime is shutting down")
        return clock

    async def _invoke(self, slot: _Slot, invocation: Invocation) -> None:
        current_invocation.set(invocation)
        if self.concurrency == 1:
            # The conventional variable, for code that reads it (one invocation at a time, so it is
            # this one's). With several slots it stays unset: a process-wide value would be another
            # invocation's id half the time. lambda_streaming.trace_id() is right in both cases.
            if invocation.trace_id:
                os.environ["_X_AMZN_TRACE_ID"] = invocation.trace_id
            else:
                os.environ.pop("_X_AMZN_TRACE_ID", None)
        connection = slot.connection
        try:
            event = json.loads(invocation.body) if invocation.body else {}
        except ValueError as exc:
            await self._post_error(connection, invocation, error_record(exc), "Runtime.UnmarshalError")
            return
        clock = self._clock(invocation)
        self._clocks.add(clock)
        try:
            await self._answer(slot, invocation, event, clock)
        finally:
            self._clocks.discard(clock)

    async def _answer(self, slot: _Slot, invocation: Invocation, event: Any, clock: _Clock) -> None:
        connection = slot.connection
        call = functools.partial(
            contextvars.copy_context().run, self.handler, event, LambdaContext(invocation)
        )
        pending = asyncio.get_running_loop().run_in_executor(slot.executor, call)
        pending.add_done_callback(_consume)
        try:
            # Shielded: on timeout the call goes on in its thread, and `pending` says so.
            result = await clock.wait(asyncio.shield(pending))
            if inspect.isawaitable(result):
                result = await clock.wait(result)
        except TimeoutError:
            if not pending.done():
                slot.abandon_thread()
            await self._post_error(connection, invocation, error_record(InvocationTimeout(clock.reason)))
            return
        except Exception as exc:
            await self._post_error(connection, invocation, error_record(exc))
            return
        if hasattr(result, "__aiter__"):
            await self._stream(connection, invocation, result, clock)
        else:
            await self._buffered(connection, invocation, result)

    async def _buffered(self, connection: Connection, invocation: Invocation, result: Any) -> None:
        try:
            body = json.dumps(result, ensure_ascii=False).encode()
        except (TypeError, ValueError) as exc:
            await self._post_error(connection, invocation, error_record(exc), "Runtime.MarshalError")
            return
        path = f"{API}/invocation/{invocation.request_id}/response"
        response = await connection.request("POST", path, body, {"Content-Type": "application/json"})
        _check_accepted(path, response.status, response.body)

    async def _stream(
        self, connection: Connection, invocation: Invocation, result: Any, clock: _Clock
    ) -> None:
        """Prelude, 8 NULs, then one HTTP chunk per item, written as soon as the handler yields it."""
        items: AsyncIterator[Any] = result.__aiter__()
        try:
            try:
                prelude = await clock.wait(anext(items))
                if not isinstance(prelude, dict):
                    raise TypeError(
                        f"the first item of a streamed response must be a dict, not {type(prelude)}"
                    )
                head = json.dumps(prelude, ensure_ascii=False).encode() + PRELUDE_DELIMITER
            except StopAsyncIteration:
                error = error_record(RuntimeError("the streamed response ended before its prelude"))
                await self._post_error(connection, invocation, error)
                return
            except TimeoutError:
                await self._post_error(connection, invocation, error_record(InvocationTimeout(clock.reason)))
                return
            except Exception as exc:
                await self._post_error(connection, invocation, error_record(exc))
                return
            pad = self.sse_pad_bytes if self.sse_pad_bytes and _is_event_stream(prelude) else 0
            path = f"{API}/invocation/{invocation.request_id}/response"
            await connection.start_chunked("POST", path, STREAM_HEADERS)
            await connection.write_chunk(head)
            failure: dict[str, Any] | None = None
            while True:
                try:
                    chunk = await clock.wait(anext(items))
                    if not isinstance(chunk, bytes | bytearray | memoryview):
                        raise TypeError(f"streamed body items must be bytes, not {type(chunk)}")
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    failure = error_record(InvocationTimeout(clock.reason))
                    break
                except Exception as exc:
                    failure = error_record(exc)
                    break
                await connection.write_chunk(pad_sse(bytes(chunk), pad) if pad else bytes(chunk))
            trailers = None
            if failure is not None:
                log_invocation_error(failure)
                trailers = {
                    "Lambda-Runtime-Function-Error-Type": _header_safe(failure["errorType"]),
                    "Lambda-Runtime-Function-Error-Body": base64.b64encode(
                        json.dumps(failure).encode()
                    ).decode(),
                }
            response = await connection.end_chunked(trailers)
            _check_accepted(path, response.status, response.body)
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _post_error(
        self,
        connection: Connection,
        invocation: Invocation,
        error: dict[str, Any],
        error_type: str | None = None,
    ) -> None:
        log_invocation_error(error)
        path = f"{API}/invocation/{invocation.request_id}/error"
        headers = {
            "Content-Type": "application/json",
            "Lambda-Runtime-Function-Error-Type": _header_safe(error_type or error["errorType"]),
        }
        response = await connection.request("POST", path, json.dumps(error).encode(), headers)
        _check_accepted(path, response.status, response.body)


def _consume(future: asyncio.Future[Any]) -> None:
    """Mark the outcome of a call nobody may wait for any more (it timed out) as seen."""
    if not future.cancelled():
        future.exception()


def _header_safe(value: str) -> str:
    return "".join(ch for ch in value if " " <= ch <= "~") or "Unhandled"


def _check_accepted(path: str, status: int, body: bytes) -> None:
    if not 200 <= status < 300:
        logger.error(
            "the Runtime API refused %s with %s: %s", path, status, body[:1000].decode(errors="replace")
        )


async def post_init_error(address: str, error: dict[str, Any], error_type: str) -> None:
    connection = Connection(address)
    try:
        path = f"{API}/init/error"
        headers = {"Content-Type": "application/json", "Lambda-Runtime-Function-Error-Type": error_type}
        response = await connection.request("POST", path, json.dumps(error).encode(), headers)
        _check_accepted(path, response.status, response.body)
    finally:
        await connection.close()


def main() -> None:
    setup_logging()
    address = os.environ.get("AWS_LAMBDA_RUNTIME_API", "")
    spec = os.environ.get("_HANDLER", "")
    if not address or not spec:
        sys.stderr.write("lambda_streaming: AWS_LAMBDA_RUNTIME_API and _HANDLER must be set\n")
        sys.exit(2)
    try:
        handler = load_handler(spec, os.environ.get("LAMBDA_TASK_ROOT", os.getcwd()))
    except Exception as exc:
        # Named as the managed runtime names it: its own Runtime.* type, else the exception's type.
        error = error_record(exc)
        if isinstance(exc, InitError):
            error["errorType"] = exc.error_type
        log_invocation_error(error)
        asyncio.run(post_init_error(address, error, error["errorType"]))
        sys.exit(1)
    runtime = Runtime(
        address,
        handler,
        concurrency=max(int(os.environ.get("AWS_LAMBDA_MAX_CONCURRENCY", "1")), 1),
        sse_pad_bytes=int(os.environ.get("LAMBDA_STREAMING_SSE_PAD_BYTES", "0")),
        shutdown_grace_seconds=int(os.environ.get("LAMBDA_STREAMING_SHUTDOWN_GRACE_MS", "2000")) / 1000,
    )
    asyncio.run(_serve_until_stopped(runtime))


async def _serve_until_stopped(runtime: Runtime) -> None:
    """Run until the Runtime API goes away; on SIGTERM, drain the invocations in flight and return."""
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, runtime.stop)
    await runtime.run()
