"""What the core needs from storage, as small Protocols, and the records that cross that line.

The core never imports the store: ``agentstream.store`` implements these Protocols over DynamoDB, and
tests can hand ``ChatService`` plain in-memory objects instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from agentstream.core.agents import Agent

__all__ = [
    "ActiveRunStore",
    "AgentReader",
    "ChatStore",
    "HistoryMessage",
    "HistoryStore",
    "MemoryItem",
    "MemoryStore",
    "RunLimiter",
    "RunLimits",
    "RunLog",
    "RunRecord",
    "RunSlot",
    "RunStore",
]

# A run still "running" this long after its deadline_at has lost its instance: it reads as "timeout".
# (deadline_at is when its invocation ends, after its last writes; this covers clocks that disagree.)
DEADLINE_GRACE_SECONDS = 2.0
# Records written before deadline_at existed: lost once this old.
_LEGACY_LOST_SECONDS = 15 * 60


@dataclass(frozen=True, slots=True)
class MemoryItem:
    id: str
    content: str
    created_at: str
    expires_at: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "content": self.content,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
        }


@dataclass(frozen=True, slots=True)
class HistoryMessage:
    role: Literal["user", "assistant"]
    content: str
    run_id: str
    created_at: str

    def to_dict(self) -> dict[str, str]:
        return {
            "role": self.role,
            "content": self.content,
            "run_id": self.run_id,
            "created_at": self.created_at,
        }


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class RunRecord:
    run_id: str
    agent_id: str
    session_id: str
    user_id: str
    status: str = "running"
    created_at: str = field(default_factory=_now_iso)
    updated_at: str = ""
    ended_at: str | None = None
    # epoch milliseconds by which the run and its last writes are over (its invocation's end)
    deadline_at: int | None = None
    # the last event's sequence number, once the run has ended (-1 while it runs)
    last_seq: int = -1
    # False when some events could not be written: a replay then ends with an error
    log_complete: bool = True
    cancel_requested: bool = False
    usage: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def lost(self) -> bool:
        """Still marked running long after its deadline: the instance running it died."""
        if self.status != "running":
            return False
        now_ms = datetime.now(UTC).timestamp() * 1000
        if self.deadline_at is None:
            created = datetime.fromisoformat(self.created_at.replace("Z", "+00:00")).timestamp() * 1000
            return now_ms > created + _LEGACY_LOST_SECONDS * 1000
        return now_ms > self.deadline_at + DEADLINE_GRACE_SECONDS * 1000

    @property
    def effective_status(self) -> str:
        """The status a reader should see: a lost run has timed out."""
        return "timeout" if self.lost else self.status

    def to_dict(self) -> dict[str, Any]:
        deadline = self.deadline_at
        return {
            "run_id": self.run_id,
            "agent_id": self.agent_id,
            "session_id": self.session_id,
            "user_id": self.user_id,
            "status": self.effective_status,
            "created_at": self.created_at,
            "updated_at": self.updated_at or self.created_at,
            "ended_at": self.ended_at,
            "deadline_at": None
            if deadline is None
            else datetime.fromtimestamp(deadline / 1000, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "events": self.last_seq + 1,
            "log_complete": self.log_complete,
            "cancel_requested": self.cancel_requested,
            "usage": self.usage,
            "metrics": self.metrics,
        }


class AgentReader(Protocol):
    async def get(self, tenant: str, agent_id: str) -> Agent: ...


class HistoryStore(Protocol):
    async def recent(
        self, tenant: str, agent_id: str, user_id: str, session_id: str, *, limit: int
    ) -> list[HistoryMessage]: ...

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
    ) -> None: ...


class MemoryStore(Protocol):
    async def list(self, tenant: str, agent_id: str, user_id: str) -> list[MemoryItem]: ...

    async def add(self, tenant: str, agent_id: str, user_id: str, content: str) -> MemoryItem: ...


class RunLog(Protocol):
    """The run log as the recorder writes it."""

    async def append(self, tenant: str, run_id: str, first_seq: int, data: str) -> None:
        """Store one batch (``data``: a JSON array ``[[seq, event], ...]`` starting at ``first_seq``).
        Idempotent: writing the same batch twice stores it once."""
        ...

    async def cancel_requested(self, tenant: str, run_id: str) -> bool:
        """Whether someone asked to cancel the run (one cheap read)."""
        ...

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
    ) -> None: ...


class RunStore(RunLog, Protocol):
    async def create(self, tenant: str, run: RunRecord) -> None: ...

    async def request_cancel(self, tenant: str, run_id: str) -> None: ...


class ActiveRunStore(Protocol):
    """Which run a session is running now, for readers who know the session but not the run."""

    async def put(self, tenant: str, agent_id: str, session_id: str, run_id: str, *, until_ms: int) -> None:
        """The session's run is now ``run_id`` (kept at least until ``until_ms``, epoch milliseconds)."""
        ...

    async def get(self, tenant: str, agent_id: str, session_id: str) -> str | None:
        """The session's latest run (it may have ended since: its record says), or None."""
        ...


class ChatStore(Protocol):
    """Everything a chat run reads and writes."""

    @property
    def agents(self) -> AgentReader: ...

    @property
    def conversations(self) -> HistoryStore: ...

    @property
    def memories(self) -> MemoryStore: ...

    @property
    def runs(self) -> RunStore: ...

    @property
    def active_runs(self) -> ActiveRunStore: ...

    @property
    def limits(self) -> RunLimiter: ...


@dataclass(frozen=True, slots=True)
class RunLimits:
    """A tenant's limits (0: none): runs started per minute, and runs running at once."""

    per_minute: int = 0
    concurrent: int = 0

    @property
    def off(self) -> bool:
        return self.per_minute <= 0 and self.concurrent <= 0


@dataclass(frozen=True, slots=True)
class RunSlot:
    """A run admitted by a ``RunLimiter``: what ``release`` gives back."""

    tenant: str
    run_id: str
    # the minute (epoch seconds // 60) the start was counted in, None when starts are not counted
    minute: int | None
    # whether the run holds one of the tenant's concurrent-run slots
    holds_slot: bool


class RunLimiter(Protocol):
    """Per-tenant limits on starting runs, shared by every instance (the store keeps the counts).

    A slot carries its run's ``deadline_at`` (epoch ms): once that (and ``DEADLINE_GRACE_SECONDS``)
    is past, the slot no longer counts, so a run whose instance died never holds one for good.
    """

    async def acquire(self, tenant: str, run_id: str, *, deadline_at: int, limits: RunLimits) -> RunSlot:
        """Count a run start and take a slot for it, or raise ``RateLimited`` (with ``retry_after``)
        having changed nothing."""
        ...

    async def release(self, slot: RunSlot, *, started: bool = True) -> None:
        """Give the slot back at the run's end; ``started=False`` (the run never started) also takes
        back its count of the minute."""
        ...
