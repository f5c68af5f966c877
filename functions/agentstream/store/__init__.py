"""Storage: one DynamoDB table, one repository per kind of record (see ARCHITECTURE.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentstream.store._table import Table, create_table
from agentstream.store.agents import AgentRepository
from agentstream.store.conversations import ConversationRepository
from agentstream.store.keys import KeyRepository
from agentstream.store.memories import MemoryRepository
from agentstream.store.runs import RunRepository

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = ["Store", "create_table"]


class Store:
    """All repositories over one table (the boto3 client is created on first use)."""

    def __init__(
        self,
        table_name: str,
        client: DynamoDBClient | None = None,
        *,
        history_ttl_days: float = 0,
        run_ttl_days: float = 30,
    ) -> None:
        table = self._table = Table(table_name, client)
        self.agents = AgentRepository(table)
        self.conversations = ConversationRepository(table, ttl_days=history_ttl_days)
        self.memories = MemoryRepository(table)
        self.keys = KeyRepository(table)
        self.runs = RunRepository(table, ttl_days=run_ttl_days)

    def connect(self) -> None:
        """Create the DynamoDB client now (start-up) rather than on the first request."""
        self._table.client  # noqa: B018
