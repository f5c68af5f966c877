"""The DynamoDB table's key schema: the one source of truth.

``agentstream init-table`` creates the table from ``create_table_request``; template.yaml and
serverless.yml declare the same schema, and a test checks that they agree with this module.

Single-table design: every record is addressed by a string partition key ``pk`` and a string sort
key ``sk``; no secondary index is needed (see ARCHITECTURE.md for the access patterns).
Records that expire carry an epoch-seconds ``expires_at`` attribute, the table's TTL attribute.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ATTRIBUTE_DEFINITIONS",
    "KEY_SCHEMA",
    "PARTITION_KEY",
    "SORT_KEY",
    "TTL_ATTRIBUTE",
    "create_table_request",
]

PARTITION_KEY = "pk"
SORT_KEY = "sk"
TTL_ATTRIBUTE = "expires_at"

KEY_SCHEMA: list[dict[str, str]] = [
    {"AttributeName": PARTITION_KEY, "KeyType": "HASH"},
    {"AttributeName": SORT_KEY, "KeyType": "RANGE"},
]
ATTRIBUTE_DEFINITIONS: list[dict[str, str]] = [
    {"AttributeName": PARTITION_KEY, "AttributeType": "S"},
    {"AttributeName": SORT_KEY, "AttributeType": "S"},
]


def create_table_request(table_name: str) -> dict[str, Any]:
    """Arguments for ``DynamoDB.Client.create_table`` (on-demand billing)."""
    return {
        "TableName": table_name,
        "KeySchema": KEY_SCHEMA,
        "AttributeDefinitions": ATTRIBUTE_DEFINITIONS,
        "BillingMode": "PAY_PER_REQUEST",
    }
