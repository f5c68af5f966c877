"""The auth matrix: every route of the app (read from its route table, so a new route cannot skip it)
x every kind of credential, with the status each must get.

Tenant "acme" owns an agent, a session, memories and a run. Kinds of credential: none, malformed
(several), a well-formed key that does not exist, acme's revoked key, another tenant's key (globex),
acme's own key (on the admin routes: a tenant key where only the admin may go), and the admin key
(the ``default`` tenant: acme's records are not its records either).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi.routing import iter_route_contexts

from tests.conftest import ADMIN_KEY
from tests.security.support import fast_scripted

MALFORMED = ["", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "bearer\tx", "Bearer ask_", "Token " + "a" * 40]
CHAT = {"message": "hello", "user_id": "u1", "session_id": "s1"}


@dataclass
class World:
    agent: str = ""
    doomed_agent: str = ""
    run: str = ""
    memory: str = ""
    doomed_key: str = ""
    keys: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Rule:
    """How a route answers: who may use it, and the status of its owner and of everyone else with a key."""

    access: str  # "public", "tenant" (any valid key, records by tenant) or "admin"
    owner: int = 200  # acme's key on a tenant route, the admin key on an admin route
    stranger: int = 404  # globex's key and the admin key on acme's records (tenant routes)
    body: Callable[[World], Any] | None = None
    query: dict[str, str] = field(default_factory=dict)


def _ui_body(world: World) -> dict[str, Any]:
    return {
        "id": "chat1",
        "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}],
    }


AGENT_BODY = {"name": "helper", "model": {"provider": "scripted", "name": "demo"}}

# Every route of the app, by (method, path). A route missing here fails the test; so does a stale entry.
# Destructive routes come last, so the records the others need are still there.
RULES: dict[tuple[str, str], Rule] = {
    ("GET", "/healthz"): Rule("public"),
    ("GET", "/"): Rule("public"),
    ("GET", "/static"): Rule("public"),  # the chat page's files (a Mount)
    ("GET", "/openapi.json"): Rule("tenant", stranger=200),
    ("POST", "/api/v1/agents"): Rule("tenant", owner=201, stranger=201, body=lambda w: AGENT_BODY),
    ("GET", "/api/v1/agents"): Rule("tenant", stranger=200),
    ("GET", "/api/v1/agents/{agent_id}"): Rule("tenant"),
    ("PATCH", "/api/v1/agents/{agent_id}"): Rule("tenant", body=lambda w: {"instructions": "Be brief."}),
    ("POST", "/api/v1/agents/{agent_id}/chat"): Rule("tenant", body=lambda w: CHAT),
    ("POST", "/api/v1/agents/{agent_id}/chat/stream"): Rule("tenant", body=lambda w: CHAT),
    ("POST", "/api/v1/agents/{agent_id}/chat/lumosai/stream"): Rule("tenant", body=lambda w: CHAT),
    ("POST", "/api/v1/agents/{agent_id}/chat/ui"): Rule("tenant", body=_ui_body),
    # nothing runs in that chat: 204 for every key (nobody learns whether the agent or chat exists)
    ("GET", "/api/v1/agents/{agent_id}/chat/ui/{chat_id}/stream"): Rule("tenant", owner=204, stranger=204),
    ("GET", "/api/v1/agents/{agent_id}/sessions"): Rule("tenant", query={"user_id": "u1"}),
    ("GET", "/api/v1/agents/{agent_id}/sessions/{session_id}/messages"): Rule(
        "tenant", query={"user_id": "u1"}
    ),
    ("GET", "/api/v1/agents/{agent_id}/memories"): Rule("tenant", query={"user_id": "u1"}),
    ("POST", "/api/v1/agents/{agent_id}/memories"): Rule(
        "tenant", owner=201, body=lambda w: {"user_id": "u1", "content": "likes tea"}
    ),
    ("GET", "/api/v1/runs/{run_id}"): Rule("tenant"),
    ("GET", "/api/v1/runs/{run_id}/events"): Rule("tenant"),
    ("POST", "/api/v1/runs/{run_id}/cancel"): Rule("tenant", owner=409),  # reached: the run has ended
    ("GET", "/v1/models"): Rule("tenant", stranger=200),
    ("POST", "/v1/chat/completions"): Rule(
        "tenant", body=lambda w: {"model": w.agent, "messages": [{"role": "user", "content": "hi"}]}
    ),
    ("POST", "/api/v1/keys"): Rule("admin", owner=201, body=lambda w: {"tenant": "initech"}),
    ("GET", "/api/v1/keys"): Rule("admin"),
    ("DELETE", "/api/v1/keys/{key_id}"): Rule("admin", owner=204),
    ("DELETE", "/api/v1/agents/{agent_id}/memories/{memory_id}"): Rule(
        "tenant", owner=204, query={"user_id": "u1"}
    ),
    ("DELETE", "/api/v1/agents/{agent_id}/memories"): Rule("tenant", owner=204, query={"user_id": "u1"}),
    ("DELETE", "/api/v1/agents/{agent_id}/sessions/{session_id}"): Rule(
        "tenant", owner=204, query={"user_id": "u1"}
    ),
    ("DELETE", "/api/v1/agents/{agent_id}"): Rule("tenant", owner=204),
}


def _route_table(app: Any) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves, included routers flattened; a mount counts as GET."""
    table: set[tuple[str, str]] = set()
    for route in iter_route_contexts(app.routes):
        assert route.path, route
        table |= {(method, route.path) for method in (route.methods or {"GET"}) if method != "HEAD"}
    return table


def _path(template: str, world: World, method: str) -> str:
    if template == "/static":
        return "/static/app.js"
    agent = (
        world.doomed_agent if (method, template) == ("DELETE", "/api/v1/agents/{agent_id}") else world.agent
    )
    return template.format(
        agent_id=agent,
        run_id=world.run,
        memory_id=world.memory,
        session_id="s1",
        chat_id="chat1",
        key_id=world.doomed_key,
    )


async def _world(app: Any, client: httpx.AsyncClient) -> World:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    world = World()
    for name, tenant in [("owner", "acme"), ("stranger", "globex"), ("revoked", "acme"), ("doomed", "acme")]:
        r = await client.post("/api/v1/keys", json={"tenant": tenant, "name": name}, headers=admin)
        world.keys[name] = r.json()["data"]["key"]
        if name in ("revoked", "doomed"):
            world.doomed_key = r.json()["data"]["id"]
        if name == "revoked":
            assert (await client.delete(f"/api/v1/keys/{world.doomed_key}", headers=admin)).status_code == 204
    owner = {"Authorization": f"Bearer {world.keys['owner']}"}
    world.agent = (await client.post("/api/v1/agents", json=AGENT_BODY, headers=owner)).json()["data"]["id"]
    world.doomed_agent = (await client.post("/api/v1/agents", json=AGENT_BODY, headers=owner)).json()["data"][
        "id"
    ]
    r = await client.post(f"/api/v1/agents/{world.agent}/chat", json=CHAT, headers=owner)
    world.run = r.json()["data"]["run_id"]
    r = await client.post(
        f"/api/v1/agents/{world.agent}/memories",
        json={"user_id": "u1", "content": "likes coffee"},
        headers=owner,
    )
    world.memory = r.json()["data"]["id"]
    return world


def _credentials(world: World) -> list[tuple[str, dict[str, str]]]:
    wrong = f"ask_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
    kinds: list[tuple[str, dict[str, str]]] = [("no key", {})]
    kinds += [(f"malformed {m!r}", {"Authorization": m}) for m in MALFORMED]
    kinds += [
        ("wrong key", {"Authorization": f"Bearer {wrong}"}),
        ("admin key, one character off", {"Authorization": f"Bearer {ADMIN_KEY[:-1]}x"}),
        ("a real key's id with a wrong secret", {"Authorization": f"Bearer {world.keys['owner'][:-4]}AAAA"}),
        ("revoked key", {"Authorization": f"Bearer {world.keys['revoked']}"}),
        ("other tenant's key", {"Authorization": f"Bearer {world.keys['stranger']}"}),
        ("admin key", {"Authorization": f"Bearer {ADMIN_KEY}"}),
        ("owner's key", {"Authorization": f"Bearer {world.keys['owner']}"}),  # last: it may delete
    ]
    return kinds


def _expected(rule: Rule, kind: str) -> int:
    if rule.access == "public":
        return 200
    if kind in ("no key", "wrong key", "revoked key") or kind.startswith(
        ("malformed", "admin key,", "a real key")
    ):
        return 401
    if rule.access == "admin":
        return rule.owner if kind == "admin key" else 403  # a tenant key where only the admin may go
    return rule.owner if kind == "owner's key" else rule.stranger


def _error_shape(path: str, body: Any) -> None:
    error = body["error"]
    assert isinstance(error["code"], str)
    assert isinstance(error["message"], str)
    assert set(error) == (
        {"message", "type", "param", "code"} if path.startswith("/v1/") else {"code", "message"}
    )


@pytest.mark.anyio
async def test_every_route_refuses_every_wrong_credential(app: Any) -> None:
    app.state.chat._providers = fast_scripted
    table = _route_table(app)
    assert table - set(RULES) == set(), "routes with no rule: add them to RULES"
    assert set(RULES) - table == set(), "rules for routes that no longer exist"
    checked = 0
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client:
        world = await _world(app, client)
        kinds = _credentials(world)
        for (method, template), rule in RULES.items():
            path = _path(template, world, method)
            for kind, headers in kinds:
                body = rule.body(world) if rule.body else None
                r = await client.request(method, path, headers=headers, json=body, params=rule.query)
                where = f"{method} {template} with {kind}"
                assert r.status_code == _expected(rule, kind), f"{where}: {r.status_code} {r.text[:300]}"
                if r.status_code >= 400:
                    _error_shape(path, r.json())
                if r.status_code == 401:
                    assert r.headers.get("www-authenticate") == "Bearer", where
                if kind in ("other tenant's key", "admin key") and r.status_code == 200:
                    assert world.agent not in r.text, f"{where}: acme's agent shows"
                    assert world.run not in r.text, f"{where}: acme's run shows"
                checked += 1
    assert checked == len(RULES) * len(kinds)
    print(f"auth matrix: {len(RULES)} routes x {len(kinds)} credentials = {checked} requests")
