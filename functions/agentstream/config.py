"""Configuration, read once from the environment (see CONTRACT.md for the public variables)."""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from typing import Literal, Self

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "ENDPOINT_NAME",
    "MCP_SERVER_NAME",
    "Endpoint",
    "McpServer",
    "Settings",
    "get_settings",
    "parse_headers",
]

InvokeMode = Literal["response_stream", "buffered"]
# Names of endpoints in AGENTSTREAM_ENDPOINTS (agents refer to them by ``model.endpoint``).
ENDPOINT_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class Endpoint(BaseModel):
    """One operator-registered model endpoint: which wire format it speaks, where, and whose key.

    The key is never written here: ``api_key_env`` names an environment variable holding it,
    ``api_key_secret_arn`` a Secrets Manager secret (read at run time, cached like the others);
    neither means a server without keys (a local vLLM, Ollama).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Literal["openai", "anthropic"]
    base_url: str = Field(..., min_length=8, max_length=2_000)
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    api_key_secret_arn: str | None = Field(None, min_length=1)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("base_url must start with https:// (or http:// for a local server)")
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> Self:
        if self.api_key_env and self.api_key_secret_arn:
            raise ValueError("give api_key_env or api_key_secret_arn, not both")
        return self


# Names of MCP servers in AGENTSTREAM_MCP_SERVERS. No "__" and no trailing "_": the server's part of a
# tool name the model sees (``mcp__<server>__<tool>``) then ends at the first "__".
MCP_SERVER_NAME = r"^[A-Za-z0-9](?:[A-Za-z0-9-]|_(?!_)){0,23}(?<!_)$"


class McpServer(BaseModel):
    """One operator-registered MCP server (streamable HTTP). Its headers (credentials) are never
    written here: ``headers_env`` names an environment variable holding a JSON object of headers,
    ``headers_secret_arn`` a Secrets Manager secret holding one (read at run time, cached)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(..., min_length=8, max_length=2_000)
    headers_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    headers_secret_arn: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.url.startswith(("https://", "http://")):
            raise ValueError("url must start with https:// (or http:// for a local server)")
        if self.headers_env and self.headers_secret_arn:
            raise ValueError("give headers_env or headers_secret_arn, not both")
        return self


def parse_headers(text: str, where: str) -> dict[str, str]:
    """A JSON object of header names to string values (from an environment variable or a secret)."""
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError(f"{where} must hold a JSON object of header names to string values")
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    table: str = Field("agentstream", validation_alias="AGENTSTREAM_TABLE")
    admin_key: SecretStr | None = Field(None, validation_alias="AGENTSTREAM_ADMIN_KEY")
    # In AWS the admin key and provider keys live in Secrets Manager; these name the secrets.
    admin_key_secret_id: str | None = Field(None, validation_alias="AGENTSTREAM_ADMIN_KEY_SECRET_ARN")
    invoke_mode: InvokeMode | None = Field(None, validation_alias="AGENTSTREAM_INVOKE_MODE")
    sam_local: bool = Field(False, validation_alias="AWS_SAM_LOCAL")
    # set by Lambda (and by the runtime emulator in tests): this process serves Lambda invocations
    lambda_runtime_api: str | None = Field(None, validation_alias="AWS_LAMBDA_RUNTIME_API")
    # The OpenAPI document (/openapi.json) needs a key like every route, and /docs is not served,
    # unless this publishes both without auth (e.g. for local development).
    publish_openapi: bool = Field(False, validation_alias="AGENTSTREAM_PUBLISH_OPENAPI")
    # A request body larger than this is refused (413) before it is read or parsed.
    max_body_bytes: int = Field(
        1_048_576, ge=1_024, le=6_291_456, validation_alias="AGENTSTREAM_MAX_BODY_BYTES"
    )

    sse_chunk_size: int = Field(0, ge=0, le=100_000, validation_alias="SSE_CHUNK_SIZE")
    sse_ping_seconds: float = Field(15.0, gt=0, validation_alias="SSE_PING_SECONDS")
    # Longest time the chunker may hold text back while grouping it into chunk_size pieces.
    sse_flush_ms: int = Field(50, ge=1, le=5_000, validation_alias="SSE_FLUSH_MS")

    openai_base_url: str = Field(
        "https://api.openai.com/v1", validation_alias=AliasChoices("OPENAI_BASE_URL", "OPENAI_API_BASE")
    )
    openai_api_key: SecretStr | None = Field(None, validation_alias="OPENAI_API_KEY")
    openai_api_key_secret_id: str | None = Field(None, validation_alias="OPENAI_API_KEY_SECRET_ARN")
    # Some servers drop system messages (llama.cpp's gemma chat format): fold them into the first user turn.
    openai_fold_system: bool = Field(False, validation_alias="OPENAI_FOLD_SYSTEM_PROMPT")
    anthropic_base_url: str = Field("https://api.anthropic.com", validation_alias="ANTHROPIC_BASE_URL")
    anthropic_api_key: SecretStr | None = Field(None, validation_alias="ANTHROPIC_API_KEY")
    anthropic_api_key_secret_id: str | None = Field(None, validation_alias="ANTHROPIC_API_KEY_SECRET_ARN")
    # The bedrock provider's region and endpoint, as boto3 reads them (None: boto3's own resolution).
    aws_region: str | None = Field(None, validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"))
    bedrock_endpoint_url: str | None = Field(None, validation_alias="AWS_ENDPOINT_URL_BEDROCK_RUNTIME")
    # Named endpoints, JSON: {"name": {"provider": "openai"|"anthropic", "base_url": ..., "api_key_env"
    # or "api_key_secret_arn": ...}}; agents pick one by ``model.endpoint``.
    endpoints: dict[str, Endpoint] = Field(default_factory=dict, validation_alias="AGENTSTREAM_ENDPOINTS")
    # Seconds to wait for the upstream to connect / between two reads of its stream.
    upstream_connect_timeout: float = Field(
        10.0, gt=0, validation_alias="AGENTSTREAM_UPSTREAM_CONNECT_TIMEOUT"
    )
    upstream_read_timeout: float = Field(60.0, gt=0, validation_alias="AGENTSTREAM_UPSTREAM_READ_TIMEOUT")
    # A model call that fails before it streamed anything (throttling, overload, 5xx) is tried again
    # this many times, with backoff.
    upstream_retries: int = Field(2, ge=0, le=10, validation_alias="AGENTSTREAM_UPSTREAM_RETRIES")

    # Records expire through the table's TTL: conversation history (0 = keep) and run logs.
    history_ttl_days: float = Field(0, ge=0, validation_alias="AGENTSTREAM_HISTORY_TTL_DAYS")
    run_ttl_days: float = Field(30, gt=0, validation_alias="AGENTSTREAM_RUN_TTL_DAYS")

    max_steps: int = Field(8, ge=1, le=50, validation_alias="AGENTSTREAM_MAX_STEPS")
    max_message_chars: int = Field(32_000, ge=1, validation_alias="AGENTSTREAM_MAX_MESSAGE_CHARS")
    # Stop a run this long before the Lambda deadline so it can end with a clean `done`.
    deadline_margin_ms: int = Field(1_500, ge=0, validation_alias="AGENTSTREAM_DEADLINE_MARGIN_MS")
    # Every run ends by this many seconds after it started, in Lambda or not (`done` status `timeout`).
    max_run_seconds: float = Field(900, gt=0, le=86_400, validation_alias="AGENTSTREAM_MAX_RUN_SECONDS")
    # A run whose model (or tool) sends nothing for this long ends (`done` status `timeout`).
    idle_timeout_seconds: float = Field(
        180, gt=0, le=86_400, validation_alias="AGENTSTREAM_IDLE_TIMEOUT_SECONDS"
    )
    # The run log: events written about this often (one write per flush); the cancel check this often.
    log_flush_seconds: float = Field(1.0, gt=0, le=60, validation_alias="AGENTSTREAM_LOG_FLUSH_SECONDS")
    heartbeat_seconds: float = Field(0.8, gt=0, le=60, validation_alias="AGENTSTREAM_HEARTBEAT_SECONDS")
    # A client that takes nothing for this long (its connection stalled) is dropped.
    send_timeout_seconds: float = Field(
        30.0, gt=0, le=3_600, validation_alias="AGENTSTREAM_SEND_TIMEOUT_SECONDS"
    )

    # MCP servers, JSON: {"name": {"url": "https://host/mcp", "headers_env" or "headers_secret_arn": ...}};
    # agents list "mcp:<name>" or "mcp:<name>/<tool>" in their tools.
    mcp_servers: dict[str, McpServer] = Field(
        default_factory=dict, validation_alias="AGENTSTREAM_MCP_SERVERS"
    )
    # One MCP tool call may take this long (then its tool_result is an error and the run goes on).
    mcp_call_timeout_seconds: float = Field(
        30.0, gt=0, le=900, validation_alias="AGENTSTREAM_MCP_CALL_TIMEOUT_SECONDS"
    )
    # A server's tool list: how long the run start waits for it, and how long it is kept.
    mcp_list_timeout_seconds: float = Field(
        5.0, gt=0, le=60, validation_alias="AGENTSTREAM_MCP_LIST_TIMEOUT_SECONDS"
    )
    mcp_list_ttl_seconds: float = Field(300.0, ge=0, validation_alias="AGENTSTREAM_MCP_LIST_TTL_SECONDS")
    # What the model sees of one tool result at most (longer results are cut, and say so).
    mcp_result_max_chars: int = Field(
        20_000, ge=100, le=1_000_000, validation_alias="AGENTSTREAM_MCP_RESULT_MAX_CHARS"
    )

    # Fair use per tenant, counted in the table so they hold across instances (0 = no limit): runs a
    # tenant may start per minute, and runs it may have running at once; over either, 429 + Retry-After.
    rate_limit_per_minute: int = Field(
        60, ge=0, le=1_000_000, validation_alias="AGENTSTREAM_RATE_LIMIT_PER_MINUTE"
    )
    max_concurrent_runs: int = Field(10, ge=0, le=1_000, validation_alias="AGENTSTREAM_MAX_CONCURRENT_RUNS")

    # headers of MCP servers that come from the environment, read once with the rest
    _mcp_headers: dict[str, dict[str, str]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _read_mcp_headers(self) -> Self:
        for name, server in self.mcp_servers.items():
            if not re.match(MCP_SERVER_NAME, name):
                raise ValueError(
                    f"AGENTSTREAM_MCP_SERVERS: {name!r} is not a server name (letters, digits, '-', "
                    "single '_', at most 24)"
                )
            if server.headers_env is None:
                continue
            text = os.environ.get(server.headers_env)
            if not text:
                raise ValueError(
                    f"AGENTSTREAM_MCP_SERVERS: server {name!r} takes its headers from "
                    f"{server.headers_env}, which is not set"
                )
            self._mcp_headers[name] = parse_headers(text, server.headers_env)
        return self

    def mcp_headers(self, name: str) -> dict[str, str]:
        """MCP server ``name``'s headers when they come from the environment (secrets: ``secrets.py``)."""
        return dict(self._mcp_headers.get(name, {}))

    # keys of named endpoints that come from the environment, read once with the rest
    _endpoint_keys: dict[str, SecretStr] = PrivateAttr(default_factory=dict)

    @field_validator("endpoints")
    @classmethod
    def _endpoint_names(cls, value: dict[str, Endpoint]) -> dict[str, Endpoint]:
        bad = [name for name in value if not re.match(ENDPOINT_NAME, name)]
        if bad:
            raise ValueError(f"endpoint names must be letters, digits, '_', '.', '-' (not {bad})")
        return value

    @model_validator(mode="after")
    def _read_endpoint_keys(self) -> Self:
        for name, endpoint in self.endpoints.items():
            if endpoint.api_key_env is None:
                continue
            key = os.environ.get(endpoint.api_key_env)
            if not key:
                raise ValueError(
                    f"AGENTSTREAM_ENDPOINTS: endpoint {name!r} takes its key from "
                    f"{endpoint.api_key_env}, which is not set"
                )
            self._endpoint_keys[name] = SecretStr(key)
        return self

    def endpoint_key(self, name: str) -> str | None:
        """The key of endpoint ``name`` when it comes from the environment (secrets: ``secrets.py``)."""
        key = self._endpoint_keys.get(name)
        return key.get_secret_value() if key is not None else None

    # --- Telemetry (docs/operating.md) ---
    # Message text, final replies and tool arguments in logs and spans: off unless asked for.
    log_content: bool = Field(False, validation_alias="AGENTSTREAM_LOG_CONTENT")
    # json | text; unset: JSON in Lambda, readable text elsewhere (`make run`)
    log_format: Literal["json", "text"] | None = Field(None, validation_alias="AGENTSTREAM_LOG_FORMAT")
    # One CloudWatch EMF blob per finished run on stdout; unset: in Lambda only (see ``emits_metrics``).
    metrics_enabled: bool | None = Field(None, validation_alias="AGENTSTREAM_METRICS")
    metrics_namespace: str = Field(
        "agentstream", min_length=1, max_length=255, validation_alias="AGENTSTREAM_METRICS_NAMESPACE"
    )
    # the `service` of log lines, metrics and spans
    service_name: str = Field(
        "agentstream",
        min_length=1,
        max_length=255,
        validation_alias=AliasChoices("POWERTOOLS_SERVICE_NAME", "OTEL_SERVICE_NAME"),
    )
    # Traces go out over OTLP/HTTP when either is set (the exporter reads the OTEL_* variables itself).
    otlp_endpoint: str | None = Field(None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT")
    otlp_traces_endpoint: str | None = Field(None, validation_alias="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    otel_sdk_disabled: bool = Field(False, validation_alias="OTEL_SDK_DISABLED")
    # How long the end of a run waits for its spans to be sent (a frozen environment loses the rest).
    trace_flush_ms: int = Field(2_000, ge=0, le=30_000, validation_alias="AGENTSTREAM_TRACE_FLUSH_MS")

    @property
    def emits_metrics(self) -> bool:
        """EMF on stdout: in Lambda (where stdout is the log group) unless turned off; elsewhere when asked
        for (a container whose stdout goes to CloudWatch Logs), never by surprise in a terminal."""
        if self.metrics_enabled is not None:
            return self.metrics_enabled
        return self.lambda_runtime_api is not None

    @property
    def traces_enabled(self) -> bool:
        return bool(self.otlp_endpoint or self.otlp_traces_endpoint) and not self.otel_sdk_disabled


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (tests clear the cache with ``get_settings.cache_clear()``)."""
    return Settings()
