"""The DynamoDB single-table store.

Keys (see ARCHITECTURE.md for every access pattern):
- agent:    pk ``T#{tenant}``                                  sk ``AGENT#{agent_id}``
- session:  pk ``T#{tenant}#A#{agent_id}#U#{user_id}``          sk ``SESSION#{session_id}``
- message:  pk ``T#{tenant}#A#{agent_id}#U#{user_id}#S#{session_id}``  sk ``MSG#{epoch_ms:013d}#{run_id}#{n}``
Tenant, user and session names never hold ``#`` (validated against ``NAME_PATTERN``).

boto3 is synchronous: every call runs in a worker thread (``asyncio.to_thread``) so the event loop keeps
streaming. The client is created on first use (cold start) and retries throttling with backoff
(botocore's standard retry mode).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from agentstream.core.agents import Agent, AgentPatch, AgentSpec
from agentstream.core.ids import new_id
from agentstream.errors import BadRequest, Conflict, NotFound, StoreUnavailable
from agentstream.store.base import Page, StoredMessage
from agentstream.store.schema import PARTITION_KEY, SORT_KEY, create_table_request

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

__all__ = ["DynamoStore", "create_table"]

R = TypeVar("R")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _client() -> DynamoDBClient:
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=3, read_timeout=10)
    return boto3.client("dynamodb", config=config)


def create_table(table_name: str, client: DynamoDBClient | None = None) -> bool:
    """Create the table (and enable TTL) if it does not exist; return whether it was created."""
    client = client or _client()
    try:
        client.create_table(**create_table_request(table_name))
    except client.exceptions.ResourceInUseException:
        return False
    client.get_waiter("table_exists").wait(TableName=table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    from agentstream.store.schema import TTL_ATTRIBUTE

    client.update_time_to_live(
        TableName=table_name, TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE}
    )
    return True


def _agent_key(tenant: str, agent_id: str) -> dict[str, Any]:
    return {PARTITION_KEY: {"S": f"T#{tenant}"}, SORT_KEY: {"S": f"AGENT#{agent_id}"}}


def _session_pk(tenant: str, agent_id: str, user_id: str) -> str:
    return f"T#{tenant}#A#{agent_id}#U#{user_id}"


def _messages_pk(tenant: str, agent_id: str, user_id: str, session_id: str) -> str:
    return f"{_session_pk(tenant, agent_id, user_id)}#S#{session_id}"


def _encode_cursor(key: dict[str, Any]) -> str:
    raw = json.dumps({k: v["S"] for k, v in key.items()}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, expected_pk: str) -> dict[str, Any]:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        key = {PARTITION_KEY: {"S": str(data[PARTITION_KEY])}, SORT_KEY: {"S": str(data[SORT_KEY])}}
    except (ValueError, KeyError, TypeError, binascii.Error) as e:
        raise BadRequest("invalid cursor", code="invalid_cursor") from e
    if key[PARTITION_KEY]["S"] != expected_pk:
        raise BadRequest("invalid cursor", code="invalid_cursor")
    return key


class DynamoStore:
    def __init__(self, table: str, client: DynamoDBClient | None = None) -> None:
        self.table = table
        self._client_instance = client
        self._lock = threading.Lock()

    @property
    def _client(self) -> DynamoDBClient:
        with self._lock:
            if self._client_instance is None:
                self._client_instance = _client()
            return self._client_instance

    async def _call(self, fn: Callable[[DynamoDBClient], R]) -> R:
        from botocore.exceptions import BotoCoreError, ClientError

        def run() -> R:
            return fn(self._client)

        try:
            return await asyncio.to_thread(run)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("ConditionalCheckFailedException", "TransactionCanceledException"):
                raise
            raise StoreUnavailable(f"the data store failed ({code or 'error'})") from e
        except BotoCoreError as e:
            raise StoreUnavailable("the data store is unreachable") from e

    @staticmethod
    def _is_condition_failure(e: Exception) -> bool:
        from botocore.exceptions import ClientError

        return isinstance(e, ClientError) and e.response.get("Error", {}).get("Code") in (
            "ConditionalCheckFailedException",
            "TransactionCanceledException",
        )

    # agents

    async def create_agent(self, tenant: str, spec: AgentSpec) -> Agent:
        now = _now()
        agent = Agent(**spec.model_dump(), id=new_id("agt"), created_at=now, updated_at=now, version=1)
        item = {**_agent_key(tenant, agent.id), "data": {"S": agent.model_dump_json()}, "version": {"N": "1"}}
        try:
            await self._call(
                lambda c: c.put_item(
                    TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(pk)"
                )
            )
        except Exception as e:
            if self._is_condition_failure(e):
                raise Conflict(f"agent {agent.id} already exists") from e
            raise
        return agent

    async def get_agent(self, tenant: str, agent_id: str) -> Agent:
        response = await self._call(
            lambda c: c.get_item(TableName=self.table, Key=_agent_key(tenant, agent_id), ConsistentRead=True)
        )
        item = response.get("Item")
        if item is None:
            raise NotFound(f"agent {agent_id} not found")
        return Agent.model_validate_json(item["data"]["S"])

    async def list_agents(self, tenant: str, *, limit: int, cursor: str | None) -> Page[Agent]:
        pk = f"T#{tenant}"
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {":pk": {"S": pk}, ":prefix": {"S": "AGENT#"}},
            "Limit": limit,
        }
        if cursor:
            kwargs["ExclusiveStartKey"] = _decode_cursor(cursor, pk)
        response = await self._call(lambda c: c.query(**kwargs))
        agents = [Agent.model_validate_json(item["data"]["S"]) for item in response.get("Items", [])]
        last = response.get("LastEvaluatedKey")
        return Page(agents, _encode_cursor(last) if last else None)

    async def update_agent(self, tenant: str, agent_id: str, patch: AgentPatch) -> Agent:
        current = await self.get_agent(tenant, agent_id)
        changes = {k: v for k, v in patch.model_dump(exclude_unset=True).items() if v is not None}
        updated = Agent.model_validate(
            {**current.model_dump(), **changes, "updated_at": _now(), "version": current.version + 1}
        )
        try:
            await self._call(
                lambda c: c.put_item(
                    TableName=self.table,
                    Item={
                        **_agent_key(tenant, agent_id),
                        "data": {"S": updated.model_dump_json()},
                        "version": {"N": str(updated.version)},
                    },
                    ConditionExpression="attribute_exists(pk) AND version = :v",
                    ExpressionAttributeValues={":v": {"N": str(current.version)}},
                )
            )
        except Exception as e:
            if self._is_condition_failure(e):
                raise Conflict(f"agent {agent_id} was changed or deleted meanwhile; retry") from e
            raise
        return updated

    async def delete_agent(self, tenant: str, agent_id: str) -> None:
        try:
            await self._call(
                lambda c: c.delete_item(
                    TableName=self.table,
                    Key=_agent_key(tenant, agent_id),
                    ConditionExpression="attribute_exists(pk)",
                )
            )
        except Exception as e:
            if self._is_condition_failure(e):
                raise NotFound(f"agent {agent_id} not found") from e
            raise

    # conversation history

    async def recent_messages(
        self, tenant: str, agent_id: str, user_id: str, session_id: str, *, limit: int
    ) -> list[StoredMessage]:
        if limit <= 0:
            return []
        response = await self._call(
            lambda c: c.query(
                TableName=self.table,
                KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
                ExpressionAttributeValues={
                    ":pk": {"S": _messages_pk(tenant, agent_id, user_id, session_id)},
                    ":prefix": {"S": "MSG#"},
                },
                ScanIndexForward=False,
                Limit=limit,
            )
        )
        messages = [
            StoredMessage(
                role="user" if item["role"]["S"] == "user" else "assistant",
                content=item["content"]["S"],
                run_id=item["run_id"]["S"],
                created_at=item["created_at"]["S"],
            )
            for item in response.get("Items", [])
        ]
        messages.reverse()
        return messages

    async def append_turn(
        self,
        tenant: str,
        agent_id: str,
        user_id: str,
        session_id: str,
        *,
        run_id: str,
        user_text: str,
        assistant_text: str,
    ) -> int:
        now = _now()
        ms = int(datetime.now(UTC).timestamp() * 1000)
        pk = _messages_pk(tenant, agent_id, user_id, session_id)

        def message(n: int, role: str, content: str) -> TransactWriteItemTypeDef:
            return {
                "Put": {
                    "TableName": self.table,
                    "Item": {
                        PARTITION_KEY: {"S": pk},
                        SORT_KEY: {"S": f"MSG#{ms:013d}#{run_id}#{n}"},
                        "role": {"S": role},
                        "content": {"S": content},
                        "run_id": {"S": run_id},
                        "created_at": {"S": now},
                    },
                }
            }

        session_key = {
            PARTITION_KEY: {"S": _session_pk(tenant, agent_id, user_id)},
            SORT_KEY: {"S": f"SESSION#{session_id}"},
        }
        await self._call(
            lambda c: c.transact_write_items(
                TransactItems=[
                    message(0, "user", user_text),
                    message(1, "assistant", assistant_text),
                    {
                        "Update": {
                            "TableName": self.table,
                            "Key": session_key,
                            "UpdateExpression": "ADD message_count :two "
                            "SET updated_at = :now, created_at = if_not_exists(created_at, :now)",
                            "ExpressionAttributeValues": {":two": {"N": "2"}, ":now": {"S": now}},
                        }
                    },
                ]
            )
        )
        response = await self._call(
            lambda c: c.get_item(TableName=self.table, Key=session_key, ConsistentRead=True)
        )
        return int(response.get("Item", {}).get("message_count", {}).get("N", "0"))
