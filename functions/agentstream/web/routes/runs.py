"""Runs: read a run's record, replay its events (resume after a broken connection), cancel it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from starlette.responses import StreamingResponse

from agentstream.errors import BadRequest
from agentstream.store import Store
from agentstream.store.runs import RunRecord
from agentstream.web.deps import Caller, Chat, StoreDep
from agentstream.web.sse import PING, encode_data, sse_headers

router = APIRouter(tags=["runs"])

POLL_SECONDS = 0.3
# A run whose record has not moved for this long is taken as lost (its instance died).
STALE_SECONDS = 15 * 60


@router.get("/runs/{run_id}")
async def get_run(run_id: str, caller: Caller, store: StoreDep) -> dict[str, Any]:
    run = await store.runs.get(caller.tenant, run_id)
    return {"data": run.to_dict()}


@router.post("/runs/{run_id}/cancel", status_code=202)
async def cancel_run(run_id: str, caller: Caller, chat: Chat) -> dict[str, Any]:
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


@router.get("/runs/{run_id}/events")
async def run_events(
    run_id: str,
    caller: Caller,
    store: StoreDep,
    chat: Chat,
    after: Annotated[int | None, Query(ge=-1, description="replay events after this id")] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    start = _start_after(after, last_event_id)
    run = await store.runs.get(caller.tenant, run_id)  # 404 before any stream
    body = _replay(store, caller.tenant, run, start, chat.settings.sse_ping_seconds)
    return StreamingResponse(body, media_type="text/event-stream; charset=utf-8", headers=sse_headers(run_id))


async def _replay(
    store: Store, tenant: str, run: RunRecord, after: int, ping_seconds: float
) -> AsyncIterator[bytes]:
    """Stored events after ``after``, then new ones as the run records them, until its ``done``."""
    last_ping = time.monotonic()
    while True:
        for seq, payload in await store.runs.events(tenant, run.run_id, after=after, upto=run.last_seq):
            yield encode_data(seq, payload)
            after = seq
            if payload.get("chunk_type") == "done":
                return
        if run.status != "running" or _stale(run):
            # ended without a recorded done (its producer was killed): end the replay truthfully
            yield encode_data(after + 1, await _closing_done(store, tenant, run))
            return
        if time.monotonic() - last_ping >= ping_seconds:
            yield PING
            last_ping = time.monotonic()
        await asyncio.sleep(POLL_SECONDS)
        run = await store.runs.get(tenant, run.run_id)


def _stale(run: RunRecord) -> bool:
    updated = datetime.fromisoformat((run.updated_at or run.created_at).replace("Z", "+00:00"))
    return (datetime.now(UTC) - updated).total_seconds() > STALE_SECONDS


async def _closing_done(store: Store, tenant: str, run: RunRecord) -> dict[str, Any]:
    events = await store.runs.events(tenant, run.run_id, upto=run.last_seq)
    text = "".join(p.get("content", "") for _, p in events if p.get("chunk_type") == "content")
    status = run.status if run.status != "running" else "error"
    return {
        "chunk_type": "done",
        "status": status,
        "final_response": text,
        "total_steps": 0,
        "memories_updated": False,
        "memories_count": 0,
        "usage": run.usage,
        "metrics": run.metrics,
    }
