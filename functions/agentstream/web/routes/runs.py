"""Runs: read a run's record, replay its events (resume after a broken connection), cancel it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Header, Query, Request
from starlette.responses import StreamingResponse

from agentstream.core.ports import RunRecord
from agentstream.errors import BadRequest, StoreUnavailable
from agentstream.store import Store
from agentstream.web.deps import Caller, Chat, StoreDep, invocation_deadline
from agentstream.web.models import CHUNK, CancelOut, RunOut, errors, sse, stream_errors
from agentstream.web.sse import MEDIA_TYPE, PING, encode_data, sse_headers

router = APIRouter(tags=["runs"])

# How often a replay of a live run looks for new batches (the recorder writes about once a second),
# and reads the run record when nothing new came (to notice a run that ended without its done).
POLL_SECONDS = 0.5
RECORD_SECONDS = 2.0
# A replay inside Lambda ends this long before the invocation does, resumable with Last-Event-ID.
REPLAY_MARGIN_SECONDS = 1.0


@router.get(
    "/runs/{run_id}",
    response_model=None,
    responses={200: {"model": RunOut}, **errors(401, 404, 413, 422, 503)},
)
async def get_run(run_id: str, caller: Caller, store: StoreDep) -> dict[str, Any]:
    run = await store.runs.get(caller.tenant, run_id)
    return {"data": run.to_dict()}


@router.post(
    "/runs/{run_id}/cancel",
    status_code=202,
    response_model=None,
    responses={202: {"model": CancelOut}, **errors(401, 404, 409, 413, 422, 503)},
)
async def cancel_run(run_id: str, caller: Caller, chat: Chat) -> dict[str, Any]:
    """A run of this process stops at once, whatever the store answers (``ChatService.cancel``)."""
    await chat.cancel(caller.tenant, run_id)
    return {"data": {"run_id": run_id, "status": "cancelling"}}


def _start_after(after: int | None, last_event_id: str | None) -> int:
    if after is not None:
        return after
    if last_event_id is None or not last_event_id.strip():
        return -1
    try:
        return int(last_event_id.strip())
    except ValueError as e:
        raise BadRequest("Last-Event-ID must be an event id (a number) of this run") from e


@router.get(
    "/runs/{run_id}/events",
    response_class=StreamingResponse,
    responses={
        **sse(
            "Server-Sent Events: the run's events after the one asked for, then live ones, to its done", CHUNK
        ),
        **stream_errors(401, 404, 413, 422, 503),
    },
)
async def run_events(
    run_id: str,
    caller: Caller,
    store: StoreDep,
    chat: Chat,
    request: Request,
    after: Annotated[int | None, Query(ge=-1, description="replay events after this id")] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    start = _start_after(after, last_event_id)
    run = await store.runs.get(caller.tenant, run_id)  # 404 before any stream
    deadline = invocation_deadline(request)
    if deadline is not None:
        deadline -= REPLAY_MARGIN_SECONDS
    replay = Replay(store, caller.tenant, run, start, chat.settings.sse_ping_seconds, deadline)
    chat.telemetry.replay_started(caller.tenant, run_id)
    return StreamingResponse(replay.frames(), media_type=MEDIA_TYPE, headers=sse_headers(run_id))


class ReplayEncoder(Protocol):
    """The wire format of a replay: one stored event, and the end of a replay cut off before the run's."""

    def event(self, seq: int, payload: dict[str, Any]) -> bytes: ...

    def pause(self, why: str, last_id: int) -> bytes: ...


class EventFrames:
    """The ``chunk_type`` stream: ``id:`` + ``data:`` frames; a pause says where to resume."""

    def event(self, seq: int, payload: dict[str, Any]) -> bytes:
        return encode_data(seq, payload)

    def pause(self, why: str, last_id: int) -> bytes:
        """A resumable end: the client reconnects with Last-Event-ID (EventSource does it by itself)."""
        return f": {why}; reconnect with Last-Event-ID: {last_id}\nretry: 500\n\n".encode()


class Replay:
    """A run's stored events after ``after``, then new ones as they are recorded, until its ``done``.

    Exact and gap-free, or it says it is not: the stored log is a gap-free prefix of the run (see
    ``store/runs.py``); when the run ended without its ``done`` in the log (its instance died, or the
    log could not be completed) the replay ends with a ``done`` of its own (after an ``error`` when
    events are missing), numbered right after the last stored event. Each poll reads only batches
    newer than the last one read. Inside Lambda it stops before the invocation's deadline with a
    comment, and the client resumes with ``Last-Event-ID``.
    """

    def __init__(
        self,
        store: Store,
        tenant: str,
        run: RunRecord,
        after: int,
        ping_seconds: float,
        deadline: float | None,
        encoder: ReplayEncoder | None = None,
    ) -> None:
        self._encoder = encoder or EventFrames()
        self._store = store
        self._tenant = tenant
        self._run = run
        self._after = after
        self._ping_seconds = ping_seconds
        self._deadline = deadline
        self._next = 0  # id of the next event expected from the log
        self._cursor = -1  # first id of the last batch read
        self._text: list[str] = []

    async def _read_new(self) -> AsyncIterator[tuple[int, dict[str, Any]]]:
        """Events not read before, in order, as long as they follow on without a gap."""
        for first, events in await self._store.runs.batches(
            self._tenant, self._run.run_id, after_first=self._cursor
        ):
            if first > self._next:
                return  # never written in order: stop at the gap, the run record tells the rest
            for seq, payload in events:
                if seq < self._next:
                    continue
                self._next = seq + 1
                if payload.get("chunk_type") == "content":
                    self._text.append(str(payload.get("content", "")))
                yield seq, payload
            self._cursor = first

    def _pause(self, why: str) -> bytes:
        return self._encoder.pause(why, max(self._after, self._next - 1))

    async def frames(self) -> AsyncIterator[bytes]:
        try:
            async for frame in self._frames():
                yield frame
        except StoreUnavailable:
            yield self._pause("the data store is unavailable")

    async def _frames(self) -> AsyncIterator[bytes]:
        last_ping = last_record = time.monotonic()
        while True:
            progressed = False
            async for seq, payload in self._read_new():
                progressed = True
                if seq > self._after:
                    yield self._encoder.event(seq, payload)
                if payload.get("chunk_type") == "done":
                    return
            now = time.monotonic()
            if self._run.status != "running" or self._run.lost:
                # ended without a stored done: the batches written before the end were read above
                for seq, payload in self._closing():
                    yield self._encoder.event(seq, payload)
                return
            if not progressed and now - last_record >= RECORD_SECONDS:
                self._run = await self._store.runs.get(self._tenant, self._run.run_id)
                last_record = now
                if self._run.status != "running":
                    continue  # one more read: its last batches were written before it ended
            if self._deadline is not None and now + POLL_SECONDS >= self._deadline:
                yield self._pause("the invocation ends")
                return
            if now - last_ping >= self._ping_seconds:
                yield PING
                last_ping = now
            await asyncio.sleep(POLL_SECONDS)

    def _closing(self) -> list[tuple[int, dict[str, Any]]]:
        """The end of a run whose log holds no ``done``: an error when events are missing, then done."""
        run = self._run
        seq = self._next
        out: list[tuple[int, dict[str, Any]]] = []
        status = run.effective_status
        missing = run.status != "running" and (not run.log_complete or run.last_seq >= seq)
        if missing:
            message = f"the run's log is incomplete: events from {seq} on were not recorded"
            out.append((seq, {"chunk_type": "error", "content": message, "code": "log_incomplete"}))
            seq += 1
            status = "error"
        done = {
            "chunk_type": "done",
            "status": status,
            "final_response": "".join(self._text),
            "total_steps": 0,
            "memories_updated": False,
            "memories_count": 0,
            "usage": run.usage,
            "metrics": run.metrics,
        }
        out.append((seq, done))
        return [(s, p) for s, p in out if s > self._after]
