"""Storage: one DynamoDB table, one repository per kind of record (see ARCHITECTURE.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentstream.store._table import Table, create_table
from agentstream.store.active_runs import ActiveRunRepository
from agentstream.store.agents import AgentRepository
from agentstream.store.conversations import ConversationRepository
from agentstream.store.keys import KeyRepository
from agentstream.store.limits import LimitRepository
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
        self.active_runs = ActiveRunRepository(table)
        self.limits = LimitRepository(table)

    def connect(self, *, dry_run_calls: bool = True, open_connection: bool = False) -> None:
        """Create the DynamoDB client now (start-up) rather than on the first request.

        With ``dry_run_calls`` every operation a chat makes is also run once against a stubbed
        answer (no network, no cost): botocore builds its serializers, endpoint rules, signer and
        parsers on an operation's first call, which would otherwise land on the first request.
        ``open_connection`` (Lambda's init) also reads an absent item on as many connections as a
        request uses at once (half a read unit each), so their TLS handshakes are done before it.
        """
        client = self._table.client
        if dry_run_calls:
            _dry_run(client, self._table.name)
        if open_connection:
            from concurrent.futures import ThreadPoolExecutor

            def read(_: int) -> object:
                return client.get_item(TableName=self._table.name, Key=_WARM_UP_KEY)

            with ThreadPoolExecutor(_PARALLEL_CALLS) as pool:
                list(pool.map(read, range(_PARALLEL_CALLS)))


_WARM_UP_KEY = {"pk": {"S": "warm-up"}, "sk": {"S": "warm-up"}}
# The most store calls a chat request makes at once (history, memories, run record, a UI chat's pointer).
_PARALLEL_CALLS = 4


class _EmptyBody:
    def stream(self) -> list[bytes]:
        return [b"{}"]


def _dry_run(client: DynamoDBClient, table: str) -> None:
    from botocore.awsrequest import AWSResponse, HTTPHeaders

    def answer(**kwargs: object) -> AWSResponse:
        return AWSResponse("https://dynamodb.invalid/", 200, HTTPHeaders(), _EmptyBody())

    k = _WARM_UP_KEY
    names = {"#s": "status"}
    hook: Any = answer  # a before-send handler that returns a response short-circuits the request
    client.meta.events.register_first("before-send.dynamodb", hook, unique_id="agentstream-dry-run")
    try:
        client.get_item(TableName=table, Key=k, ConsistentRead=True)
        client.query(
            TableName=table, KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": k["pk"]}
        )
        client.put_item(TableName=table, Item=k, ConditionExpression="attribute_not_exists(pk)")
        client.update_item(
            TableName=table,
            Key=k,
            UpdateExpression="SET #s = :s",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={":s": {"S": "x"}},
        )
        client.batch_write_item(RequestItems={table: [{"PutRequest": {"Item": k}}]})
        client.batch_get_item(RequestItems={table: {"Keys": [k], "ConsistentRead": True}})
    finally:
        client.meta.events.unregister("before-send.dynamodb", unique_id="agentstream-dry-run")
