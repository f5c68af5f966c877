"""Chat runs: validate a chat request, load the agent and its history, run it, remember the turn.

This is the use case the HTTP routes and the CLI call; it knows nothing of either.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentstream.core.agent import Turn, run_agent
from agentstream.core.chunking import regroup_text
from agentstream.core.events import Done, Error, Event
from agentstream.core.ids import NAME_PATTERN, new_id
from agentstream.core.providers import create_provider
from agentstream.core.providers.base import Message
from agentstream.core.runs import RunHandle
from agentstream.errors import AgentStreamError, BadRequest

if TYPE_CHECKING:
    from agentstream.config import Settings
    from agentstream.core.agents import Agent
    from agentstream.core.providers.base import ModelProvider
    from agentstream.store.base import Store

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


class ChatService:
    def __init__(
        self, store: Store, settings: Settings, providers: ProviderFactory = create_provider
    ) -> None:
        self.store = store
        self.settings = settings
        self._providers = providers

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
        agent = await self.store.get_agent(tenant, agent_id)
        session_id = request.session_id or "default"
        history: list[Message] = []
        if agent.memory.enabled and agent.memory.history_messages > 0:
            stored = await self.store.recent_messages(
                tenant, agent.id, request.user_id, session_id, limit=agent.memory.history_messages
            )
            history = [Message(m.role, m.content) for m in stored]
        provider = await self._providers(agent.model.provider, self.settings)
        turn = Turn(
            run_id=new_id("run"),
            agent=agent,
            session_id=session_id,
            user_id=request.user_id,
            message=request.message,
            history=history,
            deadline=deadline,
            started=started,
        )
        chunk_size = request.stream_options.chunk_size
        if chunk_size is None:
            chunk_size = self.settings.sse_chunk_size
        events = self._events(tenant, agent, turn, provider, chunk_size)
        return RunHandle(turn.run_id, session_id, events)

    async def _events(
        self, tenant: str, agent: Agent, turn: Turn, provider: ModelProvider, chunk_size: int
    ) -> AsyncIterator[Event]:
        events = run_agent(turn, provider, max_steps=self.settings.max_steps)
        async for event in regroup_text(events, chunk_size, self.settings.sse_flush_ms / 1000):
            if isinstance(event, Done) and event.status == "completed" and agent.memory.enabled:
                try:
                    count = await self.store.append_turn(
                        tenant,
                        agent.id,
                        turn.user_id,
                        turn.session_id,
                        run_id=turn.run_id,
                        user_text=turn.message,
                        assistant_text=event.final_response,
                    )
                except AgentStreamError as e:
                    yield Error(f"the reply could not be saved: {e.message}", e.code)
                    event = dataclasses.replace(event, status="error")
                else:
                    event = dataclasses.replace(event, memories_updated=True, memories_count=count)
            yield event
