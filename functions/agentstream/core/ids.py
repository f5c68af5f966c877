"""Identifiers: a prefix, then time-ordered hex (so listings come out in creation order), then randomness."""

from __future__ import annotations

import re
import secrets
import time

__all__ = ["NAME_PATTERN", "new_id"]

# user ids, session ids, tenants: safe inside DynamoDB keys (no '#') and URLs
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")


def new_id(prefix: str) -> str:
    return f"{prefix}_{time.time_ns() // 1_000_000:011x}{secrets.token_hex(6)}"
