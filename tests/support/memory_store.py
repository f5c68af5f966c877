"""An in-memory store implementing the core's storage Protocols (core/ports.py), for unit tests of
ChatService, the recorder and the replay without moto. Faults and latency can be injected."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from agentstream.core.agents import Agent
from agentstream.core.ids import new_id
from agentstream.core.ports import HistoryMessage, MemoryItem, RunLimits, RunRecord, RunSlot
from agentstream.errors import Conflict, NotFound, RateLimited, StoreUnavailable
from agentstream.store.limits import concurrency_retry_after, rate_retry_after, slot_expired


@dataclass
class MemoryAgents:
    items: dict[tuple[str, str], Agent] = field(default_factory=dict)
    latency: float = 0.0

    async def get(self, tenant: str, agent_id: str) -> Agent:
        if self.latency:
            await asyncio.sleep(self.latency)
        try:
            return self.items[(tenant, agent_id)]
        except KeyError:
            raise NotFound(f"agent {agent_id} not found") from None


@dataclass
class MemoryConversations:
    messages: dict[tuple[str, ...], list[HistoryMessage]] = field(default_factory=dict)
    fail: bool = False

    async def recent(
        self, tenant: str, agent_id: str, user_id: str, session_id: str, *, limit: int
    ) -> list[HistoryMessage]:
        return self.messages.get((tenant, agent_id, user_id, session_id), [])[-limit:]

    async def append_turn(
        self,
        tenant: str,
        agent_id: str,
        user_id: str,
        session_id: str,
        *,
        run_id: str,
        user_text: str,
        assistant_text: str,
    ) -> None:
        if self.fail:
            raise StoreUnavailable("the data store failed (injected)")
        stored = self.messages.setdefault((tenant, agent_id, user_id, session_id), [])
        stored += [
            HistoryMessage("user", user_text, run_id, ""),
            HistoryMessage("assistant", assistant_text, run_id, ""),
        ]


@dataclass
class MemoryMemories:
    items: dict[tuple[str, str, str], list[MemoryItem]] = field(default_factory=dict)

    async def list(self, tenant: str, agent_id: str, user_id: str) -> list[MemoryItem]:
        return list(self.items.get((tenant, agent_id, user_id), []))

    async def add(self, tenant: str, agent_id: str, user_id: str, content: str) -> MemoryItem:
        held = self.items.setdefault((tenant, agent_id, user_id), [])
        same = next((m for m in held if m.content == content), None)
        if same is not None:
            return same
        item = MemoryItem(new_id("mem"), content, "")
        held.append(item)
        return item


@dataclass
class MemoryRuns:
    """Runs and their batches; ``fail_appends`` makes that many batch writes fail (after storing the
    batch when ``fail_after_write``: the answer was lost, not the write), ``latency`` slows every call."""

    records: dict[tuple[str, str], RunRecord] = field(default_factory=dict)
    batches: dict[tuple[str, str], dict[int, str]] = field(default_factory=dict)
    fail_appends: int = 0
    fail_after_write: bool = False
    latency: float = 0.0
    calls: list[str] = field(default_factory=list)

    async def _call(self, name: str) -> None:
        self.calls.append(name)
        if self.latency:
            await asyncio.sleep(self.latency)

    async def create(self, tenant: str, run: RunRecord) -> None:
        await self._call("create")
        if (tenant, run.run_id) in self.records:
            raise Conflict("exists")
        self.records[(tenant, run.run_id)] = replace(run)

    async def append(self, tenant: str, run_id: str, first_seq: int, data: str) -> None:
        await self._call("append")
        json.loads(data)  # a batch is always one JSON document
        if self.fail_appends and not self.fail_after_write:
            self.fail_appends -= 1
            raise StoreUnavailable("the data store failed (injected)")
        stored = self.batches.setdefault((tenant, run_id), {})
        stored.setdefault(first_seq, data)  # conditional: a batch is written once
        if self.fail_appends:
            self.fail_appends -= 1
            raise StoreUnavailable("the answer was lost (injected)")

    async def cancel_requested(self, tenant: str, run_id: str) -> bool:
        await self._call("cancel_requested")
        return self.records[(tenant, run_id)].cancel_requested

    async def finish(
        self,
        tenant: str,
        run_id: str,
        *,
        status: str,
        usage: dict[str, Any],
        metrics: dict[str, Any],
        last_seq: int,
        log_complete: bool,
    ) -> None:
        await self._call("finish")
        record = self.records[(tenant, run_id)]
        record.status, record.usage, record.metrics = status, usage, metrics
        record.last_seq, record.log_complete = last_seq, log_complete

    async def request_cancel(self, tenant: str, run_id: str) -> None:
        await self._call("request_cancel")
        record = self.records[(tenant, run_id)]
        if record.status != "running":
            raise Conflict("ended")
        record.cancel_requested = True

    async def get(self, tenant: str, run_id: str) -> RunRecord:
        try:
            return replace(self.records[(tenant, run_id)])
        except KeyError:
            raise NotFound(f"run {run_id} not found") from None

    def events(self, tenant: str, run_id: str) -> list[tuple[int, dict[str, Any]]]:
        """Every stored event in order (what a replay from the start would read)."""
        out: list[tuple[int, dict[str, Any]]] = []
        stored = self.batches.get((tenant, run_id), {})
        for first in sorted(stored):
            out += [(int(seq), event) for seq, event in json.loads(stored[first])]
        return out


@dataclass
class MemoryActiveRuns:
    pointers: dict[tuple[str, str, str], str] = field(default_factory=dict)

    async def put(self, tenant: str, agent_id: str, session_id: str, run_id: str, *, until_ms: int) -> None:
        self.pointers[(tenant, agent_id, session_id)] = run_id

    async def get(self, tenant: str, agent_id: str, session_id: str) -> str | None:
        return self.pointers.get((tenant, agent_id, session_id))


@dataclass
class MemoryLimits:
    """The ``RunLimiter`` of one process: the same rules as the table's (store/limits.py), in a dict."""

    clock: Callable[[], float] = time.time
    starts: dict[tuple[str, int], int] = field(default_factory=dict)
    running: dict[str, dict[str, int]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    latency: float = 0.0

    async def acquire(self, tenant: str, run_id: str, *, deadline_at: int, limits: RunLimits) -> RunSlot:
        self.calls.append("acquire")
        if self.latency:
            await asyncio.sleep(self.latency)
        now = self.clock()
        minute = int(now // 60) if limits.per_minute > 0 else None
        if minute is not None and self.starts.get((tenant, minute), 0) >= limits.per_minute:
            raise RateLimited(
                f"at most {limits.per_minute} runs may start per minute",
                retry_after=rate_retry_after(minute, now),
            )
        slots = self.running.setdefault(tenant, {})
        if limits.concurrent > 0:
            live = [d for d in slots.values() if not slot_expired(d, now)]
            if len(live) >= limits.concurrent:
                raise RateLimited(
                    f"at most {limits.concurrent} runs may run at once",
                    retry_after=concurrency_retry_after(live, now),
                )
            for dead in [r for r, d in slots.items() if slot_expired(d, now)]:
                del slots[dead]
            slots[run_id] = deadline_at
        if minute is not None:
            self.starts[(tenant, minute)] = self.starts.get((tenant, minute), 0) + 1
        return RunSlot(tenant, run_id, minute, limits.concurrent > 0)

    async def release(self, slot: RunSlot, *, started: bool = True) -> None:
        self.calls.append("release" if started else "release_unstarted")
        if slot.holds_slot:
            self.running.get(slot.tenant, {}).pop(slot.run_id, None)
        if not started and slot.minute is not None and self.starts.get((slot.tenant, slot.minute), 0) > 0:
            self.starts[(slot.tenant, slot.minute)] -= 1


@dataclass
class MemoryStore:
    agents: MemoryAgents = field(default_factory=MemoryAgents)
    conversations: MemoryConversations = field(default_factory=MemoryConversations)
    memories: MemoryMemories = field(default_factory=MemoryMemories)
    runs: MemoryRuns = field(default_factory=MemoryRuns)
    active_runs: MemoryActiveRuns = field(default_factory=MemoryActiveRuns)
    limits: MemoryLimits = field(default_factory=MemoryLimits)
