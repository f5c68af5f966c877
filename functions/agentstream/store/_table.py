"""The DynamoDB table as the repositories see it: one client, one error mapping, one place for limits.

boto3 is synchronous: every call runs in a worker thread (``asyncio.to_thread``) so the event loop keeps
streaming. The client is created on first use (or at init, see ``handlers``) and retries throttling and
transient errors with exponential backoff (botocore's standard retry mode, 3 attempts); a call made for
a request with a deadline (``core.control.io_deadline``) fails with ``StoreUnavailable`` rather than
answer after it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from agentstream.core.control import io_deadline
from agentstream.errors import BadRequest, PayloadTooLarge, StoreUnavailable
from agentstream.store.schema import PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE, create_table_request

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = [
    "MAX_ITEM_BYTES",
    "MAX_TEXT_PART",
    "ConditionFailed",
    "Table",
    "create_table",
    "epoch_seconds",
    "now_iso",
    "split_text",
]

R = TypeVar("R")

# Strings longer than this are split over several items (DynamoDB items are limited to 400 KB).
MAX_TEXT_PART = 100_000  # characters: at most 400 KB of UTF-8
# DynamoDB's item limit: attribute names and values, UTF-8.
MAX_ITEM_BYTES = 400 * 1024
_TOO_LARGE = "larger than the data store keeps in one record (400 KB)"


class ConditionFailed(Exception):
    """A conditional write did not apply (the record exists, is missing, or changed meanwhile)."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch_seconds(days_from_now: float) -> int:
    return int(datetime.now(UTC).timestamp() + days_from_now * 86_400)


def split_text(text: str, size: int = MAX_TEXT_PART) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def new_client() -> DynamoDBClient:
    import boto3
    from botocore.config import Config

    # DynamoDB answers in milliseconds: a few quick retries help, long ones only outlive the caller
    # (request paths are also bounded by the invocation's deadline, see ``io_deadline``).
    config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=2, read_timeout=5)
    return boto3.client("dynamodb", config=config)


def create_table(table_name: str, client: DynamoDBClient | None = None) -> bool:
    """Create the table (and enable TTL) if it does not exist; return whether it was created."""
    client = client or new_client()
    try:
        client.create_table(**create_table_request(table_name))
    except client.exceptions.ResourceInUseException:
        return False
    client.get_waiter("table_exists").wait(TableName=table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    client.update_time_to_live(
        TableName=table_name, TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE}
    )
    return True


def _item_too_large(message: str) -> bool:
    """DynamoDB's ValidationException for an item past 400 KB ("Item size has exceeded the maximum
    allowed size", "Item size to update has exceeded ...")."""
    return "item size" in message.lower() and "exceeded" in message.lower()


def item_bytes(item: dict[str, Any]) -> int:
    """About what DynamoDB counts of an item: names and string or binary values (numbers: their text)."""
    size = 0
    for name, value in item.items():
        size += len(name.encode())
        for kind, data in value.items():
            size += len(data) if kind == "B" else len(str(data).encode("utf-8", "surrogatepass"))
    return size


def check_item_size(item: dict[str, Any]) -> None:
    """Refuse, before any request, an item DynamoDB would refuse for its size."""
    if item_bytes(item) > MAX_ITEM_BYTES:
        raise PayloadTooLarge(f"the record is {_TOO_LARGE}")


def key(pk: str, sk: str) -> dict[str, Any]:
    return {PARTITION_KEY: {"S": pk}, SORT_KEY: {"S": sk}}


class Table:
    def __init__(self, name: str, client: DynamoDBClient | None = None) -> None:
        self.name = name
        self._client_instance = client
        self._lock = threading.Lock()

    @property
    def client(self) -> DynamoDBClient:
        with self._lock:
            if self._client_instance is None:
                self._client_instance = new_client()
            return self._client_instance

    async def call(self, fn: Callable[[DynamoDBClient], R]) -> R:
        """Run ``fn(client)`` in a thread; map failures to ``ConditionFailed`` / ``StoreUnavailable``."""
        from botocore.exceptions import BotoCoreError, ClientError

        def run() -> R:
            return fn(self.client)

        deadline = io_deadline.get()
        try:
            if deadline is None:
                return await asyncio.to_thread(run)
            left = deadline - time.monotonic()
            if left <= 0:
                raise StoreUnavailable("no time left for the data store before the deadline")
            try:
                async with asyncio.timeout(left):
                    return await asyncio.to_thread(run)
            except TimeoutError as e:
                raise StoreUnavailable("the data store did not answer before the deadline") from e
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code == "ConditionalCheckFailedException":
                raise ConditionFailed(code) from e
            if code == "TransactionCanceledException":
                reasons = e.response.get("CancellationReasons", [])
                if "ConditionalCheckFailed" in [r.get("Code") for r in reasons]:
                    raise ConditionFailed(code) from e
                if any(_item_too_large(str(r.get("Message", ""))) for r in reasons):
                    raise PayloadTooLarge(f"the request is {_TOO_LARGE}") from e
            message = str(e.response.get("Error", {}).get("Message", ""))
            if code == "ValidationException" and _item_too_large(message):
                # the caller's data, not the store's failure (a last line of defence: bodies are bounded)
                raise PayloadTooLarge(f"the request is {_TOO_LARGE}") from e
            raise StoreUnavailable(f"the data store failed ({code or 'error'})") from e
        except BotoCoreError as e:
            raise StoreUnavailable("the data store is unreachable") from e

    async def query_page(
        self,
        pk: str,
        prefix: str,
        *,
        limit: int,
        cursor: str | None = None,
        forward: bool = True,
        between: tuple[str, str] | None = None,
        **extra: Any,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the items of partition ``pk`` whose sort key starts with ``prefix`` (all if empty)
        or, with ``between``, lies in that inclusive range."""
        values: dict[str, Any] = {":pk": {"S": pk}}
        condition = "pk = :pk"
        if prefix:
            values[":prefix"] = {"S": prefix}
            condition += " AND begins_with(sk, :prefix)"
        elif between is not None:
            values[":lo"], values[":hi"] = {"S": between[0]}, {"S": between[1]}
            condition += " AND sk BETWEEN :lo AND :hi"
        kwargs: dict[str, Any] = {
            "TableName": self.name,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "Limit": limit,
            "ScanIndexForward": forward,
            **extra,
        }
        if cursor:
            kwargs["ExclusiveStartKey"] = decode_cursor(cursor, pk)
        response = await self.call(lambda c: c.query(**kwargs))
        last = response.get("LastEvaluatedKey")
        return list(response.get("Items", [])), encode_cursor(last) if last else None

    async def query_all(self, pk: str, prefix: str, **extra: Any) -> list[dict[str, Any]]:
        """Every item of partition ``pk`` under ``prefix`` (for bounded collections only)."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page, cursor = await self.query_page(pk, prefix, limit=1000, cursor=cursor, **extra)
            items += page
            if cursor is None:
                return items

    async def delete_keys(self, keys: list[dict[str, Any]]) -> None:
        await self._batch_write([{"DeleteRequest": {"Key": k}} for k in keys])

    async def put_items(self, items: list[dict[str, Any]]) -> None:
        await self._batch_write([{"PutRequest": {"Item": i}} for i in items])

    async def get_batch(
        self, keys: list[dict[str, Any]], projection: str | None = None, *, consistent: bool = False
    ) -> list[dict[str, Any]]:
        """The items of up to 100 distinct keys, retrying unprocessed keys with backoff."""
        found: list[dict[str, Any]] = []
        pending = keys
        for attempt in range(8):
            request: dict[str, Any] = {self.name: {"Keys": pending, "ConsistentRead": consistent}}
            if projection is not None:
                request[self.name]["ProjectionExpression"] = projection
            response = await self.call(lambda c, r=request: c.batch_get_item(RequestItems=r))  # type: ignore[misc]
            found += response.get("Responses", {}).get(self.name, [])
            pending = list(response.get("UnprocessedKeys", {}).get(self.name, {}).get("Keys", []))
            if not pending:
                return found
            await asyncio.sleep(0.05 * 2**attempt)
        raise StoreUnavailable("the data store kept refusing reads (throttled)")

    async def _batch_write(self, requests: list[Any]) -> None:
        """Write in batches of 25, retrying with backoff what DynamoDB left unprocessed (throttling)."""
        for start in range(0, len(requests), 25):
            pending = requests[start : start + 25]
            for attempt in range(8):
                batch: dict[str, Any] = {self.name: pending}
                response = await self.call(lambda c, b=batch: c.batch_write_item(RequestItems=b))  # type: ignore[misc]
                pending = list(response.get("UnprocessedItems", {}).get(self.name, []))
                if not pending:
                    break
                await asyncio.sleep(0.05 * 2**attempt)
            else:
                raise StoreUnavailable("the data store kept refusing writes (throttled)")


def encode_cursor(last_key: dict[str, Any]) -> str:
    raw = json.dumps({k: v["S"] for k, v in last_key.items()}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, expected_pk: str) -> dict[str, Any]:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        last = key(str(data[PARTITION_KEY]), str(data[SORT_KEY]))
    except (ValueError, KeyError, TypeError, binascii.Error) as e:
        raise BadRequest("invalid cursor", code="invalid_cursor") from e
    if last[PARTITION_KEY]["S"] != expected_pk:
        raise BadRequest("invalid cursor", code="invalid_cursor")
    return last
