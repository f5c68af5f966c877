"""Request bodies of the HTTP API (validation and the 422 messages live here, not in the core)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from agentstream.core.ids import NAME_PATTERN
from agentstream.core.service import ChatInput

__all__ = ["ChatRequest", "StreamOptions"]

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

    def to_input(self) -> ChatInput:
        return ChatInput(
            message=self.message,
            user_id=self.user_id,
            session_id=self.session_id,
            chunk_size=self.stream_options.chunk_size,
        )
