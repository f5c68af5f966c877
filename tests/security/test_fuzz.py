"""Fuzzing: schemathesis against the app's own OpenAPI document, in-process (ASGI), every operation.

- Every operation on its own, with valid (positive) and invalid (negative) generated requests, each
  sent once with the admin key and once with a tenant key (over 1,000 cases each).
- Linked sequences (stateful), following OpenAPI links: create an agent, then use its id; chat, then
  read, replay and cancel the run and read the session; add a memory, then delete it; issue a key, then
  revoke it. So the deep routes answer from real records, not only 404s. A tenant key on every route,
  the admin key on the key routes. Each sequence starts from the same store.
Every answer must be no 5xx, a status the document lists for the operation, of the documented
content type, valid against the documented schema (each SSE event too), and every error in the
contract's shape (OpenAI's under /v1/). The store is a moto server; runs use the scripted provider
without delays, whatever provider a generated agent names, so no request leaves the machine.
"""

from __future__ import annotations

import copy
import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.security.support import Service, moto_service, wipe

pytestmark = pytest.mark.slow

EXAMPLES = 24  # per operation and generation mode: 26 operations x 2 x 24, each sent with both keys
STATEFUL_STEPS = 40
STATEFUL_EXAMPLES = 14


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    with moto_service() as service:
        yield service


def _error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every error body is ``{"error": {"code", "message"}}`` (OpenAI's shape under ``/v1/``)."""
    if response.status_code < 400:
        return None
    try:
        body = json.loads(response.content)
    except ValueError as e:
        raise AssertionError(
            f"{response.status_code} with a body that is not JSON: {response.content[:200]!r}"
        ) from e
    error = body.get("error") if isinstance(body, dict) else None
    assert isinstance(error, dict), f"no error object: {body!r}"
    for field in ("code", "message"):
        assert isinstance(error.get(field), str), body
        assert error[field], body
    if case.operation.path.startswith("/v1/"):
        assert isinstance(error.get("type"), str), body
    else:
        assert set(error) == {"code", "message"}, body
    return True


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    _error_shape,
]


def _document(service: Service) -> dict[str, Any]:
    """The app's OpenAPI document (read with a key, as any caller must), plus links between operations."""
    with asgi.get_client(service.app) as client:
        response = client.get("/openapi.json", headers={"Authorization": f"Bearer {service.admin_key}"})
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    paths = document["paths"]

    def link(
        source: tuple[str, str, str], targets: list[tuple[str, str]], parameters: dict[str, str]
    ) -> None:
        path, method, status = source
        links = paths[path][method]["responses"][status].setdefault("links", {})
        for target_path, target_method in targets:
            target = paths[target_path][target_method]
            wanted = {p["name"] for p in target.get("parameters", []) if p["in"] == "path"}
            params = {f"path.{k}": v for k, v in parameters.items() if k in wanted}
            links[f"{target['operationId']}"] = {"operationId": target["operationId"], "parameters": params}

    agent = "/api/v1/agents/{agent_id}"
    agent_routes = [(p, m) for p, ops in paths.items() if p.startswith(agent) for m in ops]
    link(("/api/v1/agents", "post", "201"), agent_routes, {"agent_id": "$response.body#/data/id"})
    link(("/api/v1/agents/{agent_id}", "patch", "200"), agent_routes, {"agent_id": "$response.body#/data/id"})
    run = "/api/v1/runs/{run_id}"
    link(
        (f"{agent}/chat", "post", "200"),
        [
            (run, "get"),
            (f"{run}/events", "get"),
            (f"{run}/cancel", "post"),
            (f"{agent}/sessions/{{session_id}}/messages", "get"),
        ],
        {
            "run_id": "$response.body#/data/run_id",
            "agent_id": "$request.path.agent_id",
            "session_id": "$response.body#/data/session_id",
        },
    )
    link(
        (f"{agent}/memories", "post", "201"),
        [(f"{agent}/memories/{{memory_id}}", "delete")],
        {"memory_id": "$response.body#/data/id", "agent_id": "$request.path.agent_id"},
    )
    link(
        ("/api/v1/keys", "post", "201"),
        [("/api/v1/keys/{key_id}", "delete")],
        {"key_id": "$response.body#/data/id"},
    )
    return document


@pytest.fixture
def schema(service: Service) -> Any:
    """The app's document as it is (loaded afresh for each test: schemathesis learns from answers)."""
    loaded = schemathesis.openapi.from_dict(_document(service))
    loaded.app = service.app
    return loaded


@pytest.fixture
def linked_schema(service: Service) -> Any:
    # Linked sequences send valid requests only, and agents the service runs (the scripted provider,
    # built-in tools) so that most sequences get past creating one; the other test sends every kind of
    # body, valid or not, to every operation.
    document = _document(service)
    schemas = document["components"]["schemas"]
    for name in ("AgentSpec", "AgentPatch"):  # the request bodies only: answers keep their schemas
        properties = schemas[name]["properties"]
        for option in properties["model"].get("anyOf", [properties["model"]]):
            if "$ref" in option:
                model = copy.deepcopy(schemas[option["$ref"].rsplit("/", 1)[-1]])
                model["properties"]["provider"] = {"const": "scripted"}
                model["properties"]["endpoint"] = {"type": "null"}
                model["required"] = sorted({*model.get("required", []), "provider"})
                schemas[f"Fuzz{name}Model"] = model
                option["$ref"] = f"#/components/schemas/Fuzz{name}Model"
        for option in properties["tools"].get("anyOf", [properties["tools"]]):
            if option.get("type") == "array":
                option["items"] = {"enum": ["calculator", "current_time"]}
    config = schemathesis.Config.from_dict({"generation": {"mode": "positive"}})
    loaded = schemathesis.openapi.from_dict(document, config=config)
    loaded.app = service.app
    return loaded


@pytest.fixture(scope="module")
def client(service: Service) -> Iterator[Any]:
    with asgi.get_client(service.app) as client:
        yield client


SETTINGS = hypothesis.settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
)


def test_every_operation_holds_under_generated_requests(service: Service, schema: Any, client: Any) -> None:
    """Each generated request is sent twice: with the admin key and with a tenant key."""
    keys = {"admin": service.admin_key, "tenant": service.tenant_key}
    seen: Counter[tuple[str, str, int]] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 26
    started = time.monotonic()
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @SETTINGS
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                for who, key in keys.items():
                    headers = {"Authorization": f"Bearer {key}"}
                    response = case.call(session=client, headers=headers)
                    case.validate_response(response, checks=CHECKS, headers=headers)
                    seen[(who, case.operation.label, response.status_code)] += 1

            try:
                run()
            except hypothesis.errors.Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # nothing to get wrong (GET /healthz)
    for who in keys:
        statuses: Counter[int] = Counter()
        for (w, _, status), n in seen.items():
            if w == who:
                statuses[status] += n
        print(f"fuzz ({who}): {statuses.total()} cases; statuses {dict(sorted(statuses.items()))}")
        assert statuses.total() >= 1_000
        assert not [s for s in statuses if s >= 500]
    print(f"fuzz: {time.monotonic() - started:.1f} s")


# What the linked sequences must reach with real records: one of each group.
DEEP = [
    {"POST /api/v1/agents"},
    {"GET /api/v1/agents/{agent_id}", "PATCH /api/v1/agents/{agent_id}", "DELETE /api/v1/agents/{agent_id}"},
    {
        "POST /api/v1/agents/{agent_id}/chat",
        "POST /api/v1/agents/{agent_id}/chat/stream",
        "POST /api/v1/agents/{agent_id}/chat/lumosai/stream",
    },
    {"GET /api/v1/runs/{run_id}", "GET /api/v1/runs/{run_id}/events", "POST /api/v1/runs/{run_id}/cancel"},
    {"POST /api/v1/agents/{agent_id}/memories"},
    {"DELETE /api/v1/keys/{key_id}"},
]


def test_linked_sequences_reach_the_deep_routes(service: Service, linked_schema: Any, client: Any) -> None:
    """A tenant's key on every route, the admin key on the key routes (which it alone may use)."""
    seen: Counter[tuple[str, int]] = Counter()

    def headers(case: Any) -> dict[str, str]:
        key = service.admin_key if case.operation.path.startswith("/api/v1/keys") else service.tenant_key
        return {"Authorization": f"Bearer {key}"}

    class Machine(linked_schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            wipe(service)  # each scenario starts from the same store: the same requests, the same answers

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"session": client, "headers": headers(case)}

        def validate_response(
            self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any
        ) -> None:
            case.validate_response(response, checks=CHECKS, headers=headers(case))
            seen[(case.operation.label, response.status_code)] += 1

    started = time.monotonic()
    Machine.run(
        settings=hypothesis.settings(
            max_examples=STATEFUL_EXAMPLES,
            stateful_step_count=STATEFUL_STEPS,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        )
    )
    # reached: the record was found (a 2xx, or 409: found, but in another state, as a run that ended)
    reached = {label for (label, status) in seen if 200 <= status < 300 or status == 409}
    print(
        f"stateful: {seen.total()} calls in {time.monotonic() - started:.1f} s; "
        f"records reached on {len(reached)} operations: {sorted(reached)}"
    )
    assert [group for group in DEEP if not group & reached] == []
    assert len(reached) >= 12
    assert not [s for (_, s) in seen if s >= 500]
