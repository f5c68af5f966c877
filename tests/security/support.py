"""What the security tests share: an app over a moto server with fast scripted runs, and its keys."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from agentstream.core.providers.base import ModelRequest, ProviderEvent
from agentstream.core.providers.scripted import ScriptedProvider

ADMIN_KEY = "fuzz-admin-key"


class FastScripted(ScriptedProvider):
    """The scripted provider for every agent, whatever its provider and options: no delays, no network,
    so a run ends within milliseconds (the fuzzers create agents of every provider)."""

    async def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
        fast = dataclasses.replace(request, extra={"delay_ms": 0, "delta_chars": 40})
        async for event in super().stream(fast):
            yield event


async def fast_scripted(model: Any, settings: Any) -> FastScripted:
    return FastScripted()


@dataclass(frozen=True)
class Service:
    app: Any
    client: Any  # the boto3 DynamoDB client of the moto server
    admin_key: str
    tenant_key: str  # tenant "acme"
    other_key: str  # tenant "globex"
    revoked_key: str  # was "acme"'s
    keys: list[dict[str, Any]]  # the items of the three valid keys


@contextmanager
def moto_service() -> Iterator[Service]:
    """The app over a ThreadedMotoServer (moto's in-process mock is not thread-safe), with keys."""
    import asyncio

    import boto3
    from moto.server import ThreadedMotoServer

    from agentstream.config import Settings
    from agentstream.store import Store, create_table
    from agentstream.web.app import create_app
    from tests.support.server import free_port

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per store request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        client = boto3.client(
            "dynamodb",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        create_table("fuzz", client)
        settings = Settings(
            table="fuzz",
            admin_key=ADMIN_KEY,
            upstream_retries=0,
            sse_ping_seconds=5,
            max_run_seconds=20,
            log_flush_seconds=0.2,
        )
        store = Store("fuzz", client)
        app = create_app(settings, store)
        app.state.chat._providers = fast_scripted

        async def keys() -> tuple[str, str, str]:
            _, acme = await store.keys.create("acme", "fuzz")
            _, globex = await store.keys.create("globex", "fuzz")
            revoked, token = await store.keys.create("acme", "revoked")
            await store.keys.delete(revoked.id)
            return acme, globex, token

        tenant, other, revoked = asyncio.run(keys())
        items = client.scan(TableName="fuzz")["Items"]
        yield Service(app, client, ADMIN_KEY, tenant, other, revoked, items)
    finally:
        server.stop()


def wipe(service: Service) -> None:
    """Back to the start: no records but the service's own keys (put back if a fuzzer revoked them, and
    forgotten by the app's key cache)."""
    from agentstream.web.auth import key_cache

    table = service.app.state.store.keys._table.name
    pages = service.client.get_paginator("scan").paginate(TableName=table)
    requests: list[dict[str, Any]] = [
        {"DeleteRequest": {"Key": {"pk": item["pk"], "sk": item["sk"]}}}
        for page in pages
        for item in page["Items"]
        if item not in service.keys
    ]
    requests += [{"PutRequest": {"Item": item}} for item in service.keys]
    for start in range(0, len(requests), 25):
        service.client.batch_write_item(RequestItems={table: requests[start : start + 25]})
    cache = key_cache(service.app)
    cache.hits.clear()
    cache.misses.clear()
