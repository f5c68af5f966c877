"""CloudWatch Embedded Metric Format, as its specification states it, for checking what the app writes.

From "Specification: Embedded metric format" (Amazon CloudWatch User Guide): the root holds ``_aws``
(``Timestamp``: epoch milliseconds; ``CloudWatchMetrics``: MetricDirective objects); a MetricDirective
has ``Namespace``, ``Dimensions`` (an array of DimensionSets: arrays of at most 30 dimension keys) and
``Metrics`` (at most 100 MetricDefinitions: ``Name``, optional ``Unit`` from CloudWatch's list,
optional ``StorageResolution`` 1 or 60); the objects it defines have no other members. Every key a
directive names is a member of the root: a dimension's value a string, a metric's value a number or an
array of at most 100 numbers. The event is at most 1 MB. The JSON Schema covers the structure; the
references from directives to root members are checked by ``validate``.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema

__all__ = ["EMF_SCHEMA", "emf_blobs", "validate"]

UNITS = [
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes", "Terabytes",
    "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count", "Bytes/Second",
    "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second", "Bits/Second",
    "Kilobits/Second", "Megabits/Second", "Gigabits/Second", "Terabits/Second", "Count/Second", "None",
]  # fmt: skip

EMF_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["_aws"],
    "properties": {
        "_aws": {
            "type": "object",
            "required": ["Timestamp", "CloudWatchMetrics"],
            "additionalProperties": False,
            "properties": {
                "Timestamp": {"type": "integer", "minimum": 0},
                "CloudWatchMetrics": {"type": "array", "items": {"$ref": "#/$defs/MetricDirective"}},
                "LogGroupName": {"type": "string"},
            },
        }
    },
    "$defs": {
        "MetricDirective": {
            "type": "object",
            "required": ["Namespace", "Dimensions", "Metrics"],
            "additionalProperties": False,
            "properties": {
                "Namespace": {"type": "string", "minLength": 1, "maxLength": 1024},
                "Dimensions": {"type": "array", "items": {"$ref": "#/$defs/DimensionSet"}},
                "Metrics": {"type": "array", "maxItems": 100, "items": {"$ref": "#/$defs/MetricDefinition"}},
            },
        },
        "DimensionSet": {
            "type": "array",
            "maxItems": 30,
            "uniqueItems": True,
            "items": {"type": "string", "minLength": 1, "maxLength": 250},
        },
        "MetricDefinition": {
            "type": "object",
            "required": ["Name"],
            "additionalProperties": False,
            "properties": {
                "Name": {"type": "string", "minLength": 1, "maxLength": 1024},
                "Unit": {"enum": UNITS},
                "StorageResolution": {"enum": [1, 60]},
            },
        },
    },
}


def validate(blob: dict[str, Any]) -> None:
    """Raise unless ``blob`` is a valid EMF document (structure and target members)."""
    jsonschema.validate(blob, EMF_SCHEMA)
    assert len(json.dumps(blob).encode()) <= 1_000_000
    for directive in blob["_aws"]["CloudWatchMetrics"]:
        for dimension_set in directive["Dimensions"]:
            for key in dimension_set:
                assert isinstance(blob.get(key), str), f"dimension {key!r} has no string value"
                assert 0 < len(blob[key]) <= 1024
        for metric in directive["Metrics"]:
            value = blob.get(metric["Name"])
            values = value if isinstance(value, list) else [value]
            assert 0 < len(values) <= 100, metric
            for v in values:
                assert isinstance(v, int | float), f"{metric['Name']}: {value!r}"
                assert not isinstance(v, bool), f"{metric['Name']}: {value!r}"


def emf_blobs(lines: list[str]) -> list[dict[str, Any]]:
    """The JSON lines of a log that are EMF documents."""
    found = []
    for line in lines:
        line = line.strip()
        if line.startswith("{") and '"_aws"' in line:
            found.append(json.loads(line))
    return found
