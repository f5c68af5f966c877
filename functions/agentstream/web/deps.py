"""What routes share: the caller, the store, the chat service, common query parameters."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Query, Request

from agentstream.core.ids import NAME_PATTERN
from agentstream.core.service import ChatService
from agentstream.errors import Forbidden
from agentstream.store import Store
from agentstream.web.auth import Principal, authenticate

__all__ = [
    "Admin",
    "Caller",
    "Chat",
    "Cursor",
    "Limit",
    "OwnedAgentId",
    "StoreDep",
    "UserId",
    "invocation_deadline",
]


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _chat(request: Request) -> ChatService:
    chat: ChatService = request.app.state.chat
    return chat


async def _admin(caller: Annotated[Principal, Depends(authenticate)]) -> Principal:
    if not caller.is_admin:
        raise Forbidden("only the admin key manages API keys")
    return caller


Caller = Annotated[Principal, Depends(authenticate)]
Admin = Annotated[Principal, Depends(_admin)]
StoreDep = Annotated[Store, Depends(_store)]
Chat = Annotated[ChatService, Depends(_chat)]
UserId = Annotated[str, Query(pattern=NAME_PATTERN.pattern, description="the end user")]
Limit = Annotated[int, Query(ge=1, le=100)]
Cursor = Annotated[str | None, Query(max_length=2048)]


async def _owned_agent(agent_id: str, caller: Caller, store: StoreDep) -> str:
    """The path's agent id, once the agent is known to be the caller's (404 otherwise)."""
    await store.agents.get(caller.tenant, agent_id)
    return agent_id


OwnedAgentId = Annotated[str, Depends(_owned_agent)]


def invocation_deadline(request: Request) -> float | None:
    """Monotonic time at which the Lambda invocation serving this request ends (None outside Lambda)."""
    remaining = getattr(request.scope.get("aws.context"), "get_remaining_time_in_millis", None)
    if not callable(remaining):
        return None
    try:
        left_ms = float(remaining())
    except (TypeError, ValueError):
        return None
    return time.monotonic() + left_ms / 1000
