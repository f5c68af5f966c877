"""Agent definitions: what a user creates with ``POST /api/v1/agents``, validated here."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentstream.config import get_settings
from agentstream.core.providers import PROVIDER_NAMES
from agentstream.core.tools import TOOL_NAMES

__all__ = ["Agent", "AgentPatch", "AgentSpec", "MemoryConfig", "ModelConfig"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Strict):
    provider: str = Field("openai", description="one of the available providers")
    name: str = Field(..., min_length=1, max_length=200, description="the model's name at the provider")
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, le=200_000)
    # provider-specific options (e.g. the scripted provider's `reply`, `delay_ms`)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, value: str) -> str:
        if value not in PROVIDER_NAMES:
            raise ValueError(f"unknown provider {value!r}; available: {', '.join(sorted(PROVIDER_NAMES))}")
        return value


class MemoryConfig(_Strict):
    enabled: bool = True
    history_messages: int = Field(20, ge=0, le=200)


_MCP_ENTRY = re.compile(r"^mcp:([^/]+)(?:/(.{1,128}))?$")


def _check_tools(tools: list[str], *, configured: bool = True) -> list[str]:
    """Built-in tool names, ``mcp:<server>`` or ``mcp:<server>/<tool>``. A new or changed agent may
    only name MCP servers the operator registered (AGENTSTREAM_MCP_SERVERS): an agent never carries
    a server's URL or headers. A stored agent is not checked against the servers again."""
    unknown = [t for t in tools if t not in TOOL_NAMES and not t.startswith("mcp:")]
    if unknown:
        raise ValueError(
            f"unknown tool(s) {unknown}; available: {', '.join(sorted(TOOL_NAMES))}, "
            "mcp:<server> or mcp:<server>/<tool>"
        )
    entries = [_MCP_ENTRY.match(t) for t in tools if t.startswith("mcp:")]
    if malformed := [t for t in tools if t.startswith("mcp:") and not _MCP_ENTRY.match(t)]:
        raise ValueError(f"{malformed}: MCP tools are named mcp:<server> or mcp:<server>/<tool>")
    if configured:
        servers = get_settings().mcp_servers
        if missing := sorted({m[1] for m in entries if m is not None and m[1] not in servers}):
            known = ", ".join(sorted(servers)) or "none"
            raise ValueError(f"unknown MCP server(s) {missing}; configured: {known}")
    if len(set(tools)) != len(tools):
        raise ValueError("tools must not repeat")
    return tools


def _new_tools(tools: list[str]) -> list[str]:
    return _check_tools(tools)


def _stored_tools(tools: list[str]) -> list[str]:
    return _check_tools(tools, configured=False)


class AgentSpec(_Strict):
    """The user-settable part of an agent."""

    name: str = Field(..., min_length=1, max_length=100)
    instructions: str = Field("You are a helpful assistant.", max_length=20_000)
    model: ModelConfig
    tools: list[str] = Field(default_factory=list, max_length=20)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)

    _tools = field_validator("tools")(_new_tools)


class AgentPatch(_Strict):
    """A partial update: fields left out stay as they are (``model`` and ``memory`` are replaced whole)."""

    name: str | None = Field(None, min_length=1, max_length=100)
    instructions: str | None = Field(None, max_length=20_000)
    model: ModelConfig | None = None
    tools: list[str] | None = Field(None, max_length=20)
    memory: MemoryConfig | None = None

    @field_validator("tools")
    @classmethod
    def _known_tools(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _check_tools(value)


class Agent(AgentSpec):
    """A stored agent."""

    id: str
    created_at: str
    updated_at: str
    version: int = 1

    # a server the operator removed since does not make the stored agent unreadable (its run says so)
    _tools = field_validator("tools")(_stored_tools)
