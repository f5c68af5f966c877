"""What the core needs from storage. ``DynamoStore`` implements it; tests may use it with moto."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

from agentstream.core.agents import Agent, AgentPatch, AgentSpec

__all__ = ["Page", "Store", "StoredMessage"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StoredMessage:
    role: Literal["user", "assistant"]
    content: str
    run_id: str
    created_at: str


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


class Store(Protocol):
    async def create_agent(self, tenant: str, spec: AgentSpec) -> Agent: ...
    async def get_agent(self, tenant: str, agent_id: str) -> Agent: ...
    async def list_agents(self, tenant: str, *, limit: int, cursor: str | None) -> Page[Agent]: ...
    async def update_agent(self, tenant: str, agent_id: str, patch: AgentPatch) -> Agent: ...
    async def delete_agent(self, tenant: str, agent_id: str) -> None: ...

    async def recent_messages(
        self, tenant: str, agent_id: str, user_id: str, session_id: str, *, limit: int
    ) -> list[StoredMessage]: ...

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
    ) -> int:
        """Store one exchange; return how many messages the session now holds."""
        ...
