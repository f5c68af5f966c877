"""No amplification: failed key lookups, key partitions, Secrets Manager failures, oversized bodies."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from agentstream.store import Store
from tests.conftest import ADMIN_KEY

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


class Reads:
    """Counts the DynamoDB read calls boto3 makes (botocore's before-call hook)."""

    def __init__(self, client: Any) -> None:
        self.calls: list[str] = []
        client.meta.events.register("before-call.dynamodb.*", self._seen)

    def _seen(self, model: Any, **_: Any) -> None:
        if model.name in ("GetItem", "BatchGetItem", "Query", "Scan"):
            self.calls.append(model.name)


@pytest.fixture
def reads(dynamodb: Any) -> Reads:
    return Reads(dynamodb)


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as c:
        yield c


def _bogus() -> str:
    """A token with the exact shape of a real key that is no key."""
    return f"ask_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


@pytest.mark.anyio
async def test_a_failed_key_lookup_costs_one_read_then_none(client: httpx.AsyncClient, reads: Reads) -> None:
    token = _bogus()
    for _ in range(20):
        r = await client.get("/api/v1/agents", headers={"Authorization": f"Bearer {token}"})
        assert (r.status_code, r.json()["error"]["code"]) == (401, "unauthorized")
    assert reads.calls == ["BatchGetItem"]  # its shard and the old partition, in one request


@pytest.mark.anyio
async def test_tokens_not_shaped_like_keys_cost_no_read(client: httpx.AsyncClient, reads: Reads) -> None:
    for token in ["nope", "ask_abc_def", "ask_" + "g" * 12 + "_" + "x" * 43, _bogus() + "x", "a" * 5000]:
        r = await client.get("/api/v1/agents", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401
    assert reads.calls == []


@pytest.mark.anyio
async def test_the_miss_cache_is_bounded(
    client: httpx.AsyncClient, app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentstream.web import auth

    monkeypatch.setattr(auth, "MISS_CACHE_SIZE", 5)
    tokens = [_bogus() for _ in range(12)]
    for token in tokens:
        assert (
            await client.get("/api/v1/agents", headers={"Authorization": f"Bearer {token}"})
        ).status_code == 401
    cache = auth.key_cache(app)
    assert len(cache.misses) == 5
    assert all(cache.missed(auth.hashlib.sha256(t.encode()).hexdigest()) for t in tokens[-5:])


@pytest.mark.anyio
async def test_a_key_stays_valid_after_misses_and_a_revoked_one_fails_at_once(
    client: httpx.AsyncClient,
) -> None:
    r = await client.post("/api/v1/keys", json={"tenant": "acme"}, headers=ADMIN)
    created = r.json()["data"]
    good = {"Authorization": f"Bearer {created['key']}"}
    assert (await client.get("/api/v1/agents", headers=good)).status_code == 200
    assert (await client.delete(f"/api/v1/keys/{created['id']}", headers=ADMIN)).status_code == 204
    assert (await client.get("/api/v1/agents", headers=good)).status_code == 401


@pytest.mark.anyio
async def test_keys_spread_over_sixteen_partitions(dynamodb: Any, settings: Any) -> None:
    store = Store(settings.table, dynamodb)
    made = [await store.keys.create("acme", f"k{i}") for i in range(40)]
    items = dynamodb.scan(TableName=settings.table)["Items"]
    partitions = {i["pk"]["S"] for i in items}
    assert "KEYS" not in partitions
    assert partitions <= {f"KEYS#{c}" for c in "0123456789abcdef"}
    assert len(partitions) >= 8  # 40 random ids over 16 shards
    for record, token in made:
        assert (await store.keys.verify(token)) == record


def _legacy_key(dynamodb: Any, table: str, tenant: str) -> tuple[str, str]:
    """A key as the service wrote it before the shards: pk ``KEYS``."""
    import hashlib

    key_id = secrets.token_hex(6)
    token = f"ask_{key_id}_{secrets.token_urlsafe(32)}"
    dynamodb.put_item(
        TableName=table,
        Item={
            "pk": {"S": "KEYS"},
            "sk": {"S": f"KEY#{key_id}"},
            "hash": {"S": hashlib.sha256(token.encode()).hexdigest()},
            "tenant": {"S": tenant},
            "name": {"S": "old"},
            "created_at": {"S": "2026-01-01T00:00:00.000Z"},
        },
    )
    return key_id, token


@pytest.mark.anyio
async def test_keys_from_before_the_shards_keep_working_and_migrate(dynamodb: Any, settings: Any) -> None:
    store = Store(settings.table, dynamodb)
    old_id, old_token = _legacy_key(dynamodb, settings.table, "acme")
    gone_id, _ = _legacy_key(dynamodb, settings.table, "acme")
    new, _ = await store.keys.create("acme", "new")
    verified = await store.keys.verify(old_token)
    assert verified is not None
    assert (verified.id, verified.tenant) == (old_id, "acme")
    assert {k.id for k in (await store.keys.list(limit=10, cursor=None)).items} == {old_id, gone_id, new.id}
    await store.keys.delete(gone_id)  # revoking finds it in the old partition

    assert await store.keys.migrate_legacy() == 1
    assert await store.keys.migrate_legacy() == 0
    pks = {i["pk"]["S"] for i in dynamodb.scan(TableName=settings.table)["Items"]}
    assert "KEYS" not in pks
    assert (await store.keys.verify(old_token)) == verified
    assert {k.id for k in (await store.keys.list(limit=10, cursor=None)).items} == {old_id, new.id}


@pytest.mark.anyio
async def test_listing_pages_through_every_partition_in_order(dynamodb: Any, settings: Any) -> None:
    store = Store(settings.table, dynamodb)
    old_ids = {_legacy_key(dynamodb, settings.table, "acme")[0] for _ in range(3)}
    new_ids = [(await store.keys.create("acme", ""))[0].id for _ in range(30)]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await store.keys.list(limit=4, cursor=cursor)
        assert len(page.items) <= 4
        seen += [k.id for k in page.items]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == 9  # 33 keys, 4 a page
    assert len(seen) == len(set(seen)) == 33
    assert set(seen[:3]) == old_ids  # the old partition first, then the shards in id order
    assert seen[3:] == sorted(new_ids)


@pytest.mark.anyio
async def test_a_forged_listing_cursor_is_a_422(client: httpx.AsyncClient) -> None:
    import base64

    for pk in ("T#acme", "KEYS#z", "KEYS"):
        raw = json.dumps({"pk": pk, "sk": "AGENT#x" if pk == "T#acme" else "KEY#x"}).encode()
        cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        r = await client.get("/api/v1/keys", params={"cursor": cursor}, headers=ADMIN)
        if pk == "KEYS":
            assert r.status_code == 200  # a key item of the old partition: a valid place to go on from
        else:
            assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_cursor")


# --- Secrets Manager -------------------------------------------------------------------------------


@pytest.fixture
def secret_app(dynamodb: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The app with its admin key in a Secrets Manager secret that does not exist (moto: a failure)."""
    from agentstream import secrets as secrets_module
    from agentstream.config import Settings
    from agentstream.web.app import create_app

    monkeypatch.delenv("AGENTSTREAM_ADMIN_KEY", raising=False)
    monkeypatch.setenv("AGENTSTREAM_ADMIN_KEY_SECRET_ARN", "arn:aws:secretsmanager:us-east-1:1:secret:gone")
    secrets_module.clear_cache()
    settings = Settings()
    yield create_app(settings, Store(settings.table, dynamodb))
    secrets_module.clear_cache()


@pytest.mark.anyio
async def test_an_unreadable_admin_secret_is_a_503_and_tenant_keys_still_work(
    secret_app: Any, dynamodb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    calls: list[str] = []
    real = boto3.client

    def counting(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "secretsmanager":
            calls.append(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(boto3, "client", counting)
    _, token = await secret_app.state.store.keys.create("acme", "")
    transport = httpx.ASGITransport(secret_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        for _ in range(5):
            r = await c.get("/api/v1/agents", headers={"Authorization": "Bearer some-admin-key"})
            assert r.status_code == 503
            assert r.json() == {
                "error": {
                    "code": "secret_unavailable",
                    "message": "a secret the service needs cannot be read now; try again later",
                }
            }
        r = await c.get("/v1/models", headers={"Authorization": "Bearer some-admin-key"})
        assert (r.status_code, r.json()["error"]["code"]) == (503, "secret_unavailable")
        assert "secret:gone" not in r.text
        r = await c.get("/api/v1/agents", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
    assert len(calls) == 1  # the failure is remembered for a few seconds


@pytest.mark.anyio
async def test_a_provider_key_secret_failure_is_a_503_before_the_stream(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentstream import secrets as secrets_module

    secrets_module.clear_cache()
    app.state.settings.openai_api_key = None
    app.state.settings.openai_api_key_secret_id = "arn:aws:secretsmanager:us-east-1:1:secret:nokey"
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app, raise_app_exceptions=False), base_url="http://test", headers=ADMIN
    ) as c:
        body = {"name": "a", "model": {"provider": "openai", "name": "gpt"}}
        agent = (await c.post("/api/v1/agents", json=body)).json()["data"]
        r = await c.post(f"/api/v1/agents/{agent['id']}/chat/stream", json={"message": "hi"})
    secrets_module.clear_cache()
    assert (r.status_code, r.json()["error"]["code"]) == (503, "secret_unavailable")


# --- request bodies --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_body_over_the_limit_is_a_413_before_auth_and_parsing(app: Any) -> None:
    limit = app.state.settings.max_body_bytes
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as c:
        big = b'{"message": "' + b"x" * limit + b'"}'
        for path, headers in [("/api/v1/agents/x/chat/stream", {}), ("/api/v1/agents", ADMIN)]:
            r = await c.post(path, content=big, headers={**headers, "Content-Type": "application/json"})
            assert r.status_code == 413
            assert r.json() == {
                "error": {
                    "code": "payload_too_large",
                    "message": f"the request body is larger than {limit} bytes",
                }
            }
        r = await c.post("/v1/chat/completions", content=big, headers=ADMIN)
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "payload_too_large"
        assert r.json()["error"]["type"] == "invalid_request_error"  # OpenAI's shape on /v1/


@pytest.mark.anyio
async def test_a_streamed_body_over_the_limit_is_a_413(app: Any) -> None:
    limit = app.state.settings.max_body_bytes

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
        yield b'{"name": "a", "instructions": "'
        for _ in range(limit // 65_536 + 2):
            yield b"x" * 65_536
        yield b'"}'

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as c:
        r = await c.post("/api/v1/agents", content=chunks(), headers=ADMIN)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"


@pytest.mark.anyio
async def test_a_body_within_the_limit_is_read(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as c:
        body = {"name": "a", "model": {"provider": "scripted", "name": "x"}, "instructions": "y" * 20_000}
        r = await c.post("/api/v1/agents", json=body, headers=ADMIN)
    assert r.status_code == 201, r.text
