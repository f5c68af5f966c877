"""Agent definitions: what a user creates with ``POST /api/v1/agents``, validated here."""

from __future__ import annotations

import re
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agentstream.config import ENDPOINT_NAME, get_settings
from agentstream.core.providers import ENDPOINT_PROVIDERS, PROVIDER_NAMES
from agentstream.core.providers._options import check_options
from agentstream.core.tools import TOOL_NAMES

__all__ = ["Agent", "AgentPatch", "AgentSpec", "MemoryConfig", "ModelConfig"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# An agent never carries where its model lives or the key to it (no SSRF, no keys in the table):
# operators register endpoints (AGENTSTREAM_ENDPOINTS) and agents name one.
_CONNECTION_FIELDS = frozenset({"base_url", "api_base", "api_key", "endpoint_url", "url", "headers"})
_NO_CONNECTION = (
    "an agent cannot carry a URL or key; the operator registers endpoints in AGENTSTREAM_ENDPOINTS "
    "and the agent names one in model.endpoint"
)


class ModelConfig(_Strict):
    provider: str = Field("openai", description="one of the available providers")
    name: str = Field(..., min_length=1, max_length=200, description="the model's name at the provider")
    endpoint: str | None = Field(
        None,
        pattern=ENDPOINT_NAME,
        description="a named endpoint of the operator's (AGENTSTREAM_ENDPOINTS); none: the provider's own",
    )
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, le=200_000)
    # sent with every model call: only the provider's documented sampling options (providers/_options.py)
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="the provider's sampling options (e.g. openai: top_p, seed, stop; scripted: reply, "
        "delay_ms); never messages, model, stream, n or tools; at most 32 KB of JSON",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_connection_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            options = data.get("options")
            given = set(data) | (set(options) if isinstance(options, dict) else set())
            if given & _CONNECTION_FIELDS:
                raise ValueError(f"{', '.join(sorted(given & _CONNECTION_FIELDS))}: {_NO_CONNECTION}")
        return data

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, value: str) -> str:
        if value not in PROVIDER_NAMES:
            raise ValueError(f"unknown provider {value!r}; available: {', '.join(sorted(PROVIDER_NAMES))}")
        return value

    @model_validator(mode="after")
    def _provider_takes_endpoints(self) -> Self:
        """Only providers that speak HTTP to a base URL have named endpoints (not bedrock, scripted)."""
        if self.endpoint is not None and self.provider not in ENDPOINT_PROVIDERS:
            raise ValueError(f"provider {self.provider!r} has no named endpoints")
        return self


def _check_endpoint(model: ModelConfig | None) -> ModelConfig | None:
    """A new or changed agent may only name an endpoint that is configured now and speaks its provider;
    an agent that names no provider gets the endpoint's.

    (Stored agents are not checked again: one whose endpoint the operator removed still reads; its
    runs fail with a clear error.)
    """
    if model is None or model.endpoint is None:
        return model
    endpoints = get_settings().endpoints
    endpoint = endpoints.get(model.endpoint)
    if endpoint is None:
        known = ", ".join(sorted(endpoints)) or "none"
        raise ValueError(f"unknown endpoint {model.endpoint!r}; configured: {known}")
    if "provider" not in model.model_fields_set:
        return model.model_copy(update={"provider": endpoint.provider})
    if endpoint.provider != model.provider:
        raise ValueError(f"endpoint {model.endpoint!r} speaks {endpoint.provider}, not {model.provider}")
    return model


def _check_new_model(model: ModelConfig | None) -> ModelConfig | None:
    """A new or changed agent's model: its endpoint (see above), and options its provider takes.

    (Stored agents are not checked again: options written before these rules are left out of their
    runs, which say so; see ``providers/_options.py``.)
    """
    model = _check_endpoint(model)
    if model is not None:
        check_options(model.provider, model.options)
    return model


class MemoryConfig(_Strict):
    enabled: bool = True
    history_messages: int = Field(20, ge=0, le=200)


def _stored(model: ModelConfig) -> ModelConfig:
    return model


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
    _endpoint = field_validator("model")(_check_new_model)


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

    _endpoint = field_validator("model")(_check_new_model)


class Agent(AgentSpec):
    """A stored agent."""

    id: str
    created_at: str
    updated_at: str
    version: int = 1

    # what was checked when it was written is not checked again on every read (a server or an
    # endpoint the operator removed since does not make the agent unreadable; its run says so)
    _tools = field_validator("tools")(_stored_tools)
    _endpoint = field_validator("model")(_stored)
