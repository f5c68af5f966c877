"""Chat runs: validate a chat request, load the agent, its history and memories, run it, keep the turn.

This is the use case the HTTP routes and the CLI call; it knows nothing of either.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentstream.core.agent import Turn, run_agent
from agentstream.core.chunking import regroup_text
from agentstream.core.events import Done, Error, Event
from agentstream.core.ids import NAME_PATTERN, new_id
from agentstream.core.providers import create_provider
from agentstream.core.providers.base import Message
from agentstream.core.recorder import RunRecorder
from agentstream.core.runs import RunHandle
from agentstream.core.tools import BUILTIN_TOOLS, Tool, remember_tool
from agentstream.errors import AgentStreamError, BadRequest
from agentstream.store.memories import MemoryItem, relevant
from agentstream.store.runs import RunRecord

if TYPE_CHECKING:
    from agentstream.config import Settings
    from agentstream.core.agents import Agent
    from agentstream.core.providers.base import ModelProvider
    from agentstream.store import Store

__all__ = ["ChatRequest", "ChatService", "StreamOptions"]

_NAME = NAME_PATTERN.pattern


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chunk_size: int | None = Field(
        None,
        ge=0,
        le=10_000,
        description="max characters per content event; 0 = each model delta as it comes",
    )
    on_disconnect: Literal["cancel", "continue"] = "cancel"


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(..., min_length=1)
    user_id: str = Field("anonymous", pattern=_NAME)
    session_id: str | None = Field(None, pattern=_NAME)
    stream_options: StreamOptions = Field(default_factory=StreamOptions)


ProviderFactory = Callable[[str, "Settings"], Awaitable["ModelProvider"]]


def _system_prompt(agent: Agent, memories: list[MemoryItem]) -> str:
    if not memories:
        return agent.instructions
    facts = "\n".join(f"- {m.content}" for m in memories)
    return f"{agent.instructions}\n\nWhat you remember about this user:\n{facts}"


class ChatService:
    def __init__(
        self, store: Store, settings: Settings, providers: ProviderFactory = create_provider
    ) -> None:
        self.store = store
        self.settings = settings
        self._providers = providers
        # runs in flight in this process, so a cancel request reaches them at once
        self.active: dict[str, RunHandle] = {}

    async def start(
        self,
        tenant: str,
        agent_id: str,
        request: ChatRequest,
        *,
        deadline: float | None = None,
        started: float | None = None,
    ) -> RunHandle:
        """Prepare a run and start it. Errors raised here come before any event (plain HTTP errors)."""
        started = time.monotonic() if started is None else started
        if len(request.message) > self.settings.max_message_chars:
            raise BadRequest(f"message longer than {self.settings.max_message_chars} characters")
        agent = await self.store.agents.get(tenant, agent_id)
        session_id = request.session_id or "default"
        user_id = request.user_id
        run_id = new_id("run")
        remembers = agent.memory.enabled or "remember" in agent.tools
        stored, memories, provider = await asyncio.gather(
            self.store.conversations.recent(
                tenant, agent.id, user_id, session_id, limit=agent.memory.history_messages
            )
            if agent.memory.enabled
            else _nothing(),
            self.store.memories.list(tenant, agent.id, user_id) if remembers else _nothing(),
            self._providers(agent.model.provider, self.settings),
        )
        await self.store.runs.create(tenant, RunRecord(run_id, agent.id, session_id, user_id))
        stop = asyncio.Event()
        remembered: list[str] = []

        async def save(fact: str) -> str:
            item = await self.store.memories.add(tenant, agent.id, user_id, fact)
            remembered.append(item.id)
            return f"remembered: {item.content}"

        tools: dict[str, Tool] = {**BUILTIN_TOOLS, "remember": remember_tool(save)}
        turn = Turn(
            run_id=run_id,
            agent=agent.model_copy(
                update={"instructions": _system_prompt(agent, relevant(memories, request.message))}
            ),
            session_id=session_id,
            user_id=user_id,
            message=request.message,
            history=[Message(m.role, m.content) for m in stored],
            deadline=deadline,
            started=started,
            stop=stop,
        )
        chunk_size = request.stream_options.chunk_size
        if chunk_size is None:
            chunk_size = self.settings.sse_chunk_size
        events = run_agent(turn, provider, max_steps=self.settings.max_steps, tools=tools)
        events = regroup_text(events, chunk_size, self.settings.sse_flush_ms / 1000)
        events = self._remember_turn(tenant, agent, turn, events, remembered)
        recorder = RunRecorder(self.store.runs, tenant, run_id, on_cancel=stop.set)
        handle = RunHandle(run_id, session_id, events, stop=stop, recorder=recorder)
        self.active[run_id] = handle
        handle.on_finished(lambda: self.active.pop(run_id, None))
        return handle

    async def _remember_turn(
        self, tenant: str, agent: Agent, turn: Turn, events: AsyncIterator[Event], remembered: list[str]
    ) -> AsyncIterator[Event]:
        """Pass events on; before ``Done``, store the exchange and fill in the memory counts."""
        async for event in events:
            if isinstance(event, Done):
                try:
                    if event.status == "completed" and agent.memory.enabled:
                        await self.store.conversations.append_turn(
                            tenant,
                            agent.id,
                            turn.user_id,
                            turn.session_id,
                            run_id=turn.run_id,
                            user_text=turn.message,
                            assistant_text=event.final_response,
                        )
                        remembered.append("history")
                    count = await self.store.memories.count(tenant, agent.id, turn.user_id)
                except AgentStreamError as e:
                    yield Error(f"the reply could not be saved: {e.message}", e.code)
                    event = dataclasses.replace(event, status="error")
                else:
                    event = dataclasses.replace(
                        event, memories_updated=bool(remembered), memories_count=count
                    )
            yield event

    async def cancel(self, tenant: str, run_id: str) -> None:
        """Ask a run to stop, wherever it runs: recorded for other instances, signalled to ours."""
        await self.store.runs.request_cancel(tenant, run_id)
        handle = self.active.get(run_id)
        if handle is not None:
            handle.stop()


async def _nothing() -> list[Any]:
    return []
