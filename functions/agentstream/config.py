"""Configuration, read once from the environment (see CONTRACT.md for the public variables)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_settings"]

InvokeMode = Literal["response_stream", "buffered"]


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
    # Seconds to wait for the upstream to connect / between two reads of its stream.
    upstream_connect_timeout: float = Field(
        10.0, gt=0, validation_alias="AGENTSTREAM_UPSTREAM_CONNECT_TIMEOUT"
    )
    upstream_read_timeout: float = Field(60.0, gt=0, validation_alias="AGENTSTREAM_UPSTREAM_READ_TIMEOUT")

    # Records expire through the table's TTL: conversation history (0 = keep) and run logs.
    history_ttl_days: float = Field(0, ge=0, validation_alias="AGENTSTREAM_HISTORY_TTL_DAYS")
    run_ttl_days: float = Field(30, gt=0, validation_alias="AGENTSTREAM_RUN_TTL_DAYS")

    max_steps: int = Field(8, ge=1, le=50, validation_alias="AGENTSTREAM_MAX_STEPS")
    max_message_chars: int = Field(32_000, ge=1, validation_alias="AGENTSTREAM_MAX_MESSAGE_CHARS")
    # Stop a run this long before the Lambda deadline so it can end with a clean `done`.
    deadline_margin_ms: int = Field(1_500, ge=0, validation_alias="AGENTSTREAM_DEADLINE_MARGIN_MS")
    # Every run ends by this many seconds after it started, in Lambda or not (`done` status `timeout`).
    max_run_seconds: float = Field(900, gt=0, le=86_400, validation_alias="AGENTSTREAM_MAX_RUN_SECONDS")
    # The run log: events written about this often (one write per flush); the cancel check this often.
    log_flush_seconds: float = Field(1.0, gt=0, le=60, validation_alias="AGENTSTREAM_LOG_FLUSH_SECONDS")
    heartbeat_seconds: float = Field(0.8, gt=0, le=60, validation_alias="AGENTSTREAM_HEARTBEAT_SECONDS")
    # A client that takes nothing for this long (its connection stalled) is dropped.
    send_timeout_seconds: float = Field(
        30.0, gt=0, le=3_600, validation_alias="AGENTSTREAM_SEND_TIMEOUT_SECONDS"
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (tests clear the cache with ``get_settings.cache_clear()``)."""
    return Settings()
