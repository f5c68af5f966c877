"""Agents: pk ``T#{tenant}``, sk ``AGENT#{agent_id}``; the agent itself is one JSON attribute."""

from __future__ import annotations

from typing import Any

from agentstream.core.agents import Agent, AgentPatch, AgentSpec
from agentstream.core.ids import new_id
from agentstream.errors import Conflict, NotFound
from agentstream.store._combine import Combiner
from agentstream.store._table import ConditionFailed, Table, check_item_size, key, now_iso
from agentstream.store.pages import Page

__all__ = ["AgentRepository"]


def _key(tenant: str, agent_id: str) -> dict[str, Any]:
    return key(f"T#{tenant}", f"AGENT#{agent_id}")


class AgentRepository:
    def __init__(self, table: Table) -> None:
        self._table = table
        # reads of requests that arrive together go out as one (strongly consistent) BatchGetItem
        self._reads: Combiner[dict[str, Any], dict[str, Any] | None] = Combiner(self._read, max_batch=100)

    async def create(self, tenant: str, spec: AgentSpec) -> Agent:
        now = now_iso()
        agent = Agent(**spec.model_dump(), id=new_id("agt"), created_at=now, updated_at=now, version=1)
        await self._put(tenant, agent, "attribute_not_exists(pk)", {})
        return agent

    async def get(self, tenant: str, agent_id: str) -> Agent:
        item = await self._reads.submit(_key(tenant, agent_id))
        if item is None:
            raise NotFound(f"agent {agent_id} not found")
        return Agent.model_validate_json(item["data"]["S"])

    async def _read(self, keys: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
        unique = {(k["pk"]["S"], k["sk"]["S"]): k for k in keys}
        items = await self._table.get_batch(list(unique.values()), consistent=True)
        found = {(i["pk"]["S"], i["sk"]["S"]): i for i in items}
        return [found.get((k["pk"]["S"], k["sk"]["S"])) for k in keys]

    async def list(self, tenant: str, *, limit: int, cursor: str | None) -> Page[Agent]:
        items, next_cursor = await self._table.query_page(f"T#{tenant}", "AGENT#", limit=limit, cursor=cursor)
        return Page([Agent.model_validate_json(i["data"]["S"]) for i in items], next_cursor)

    async def update(
        self, tenant: str, agent_id: str, patch: AgentPatch, *, expected_version: int | None = None
    ) -> Agent:
        """Apply ``patch``; ``expected_version`` (from ``If-Match``) makes a stale edit a 409."""
        current = await self.get(tenant, agent_id)
        if expected_version is not None and expected_version != current.version:
            raise Conflict(f"agent {agent_id} is at version {current.version}, not {expected_version}")
        changes = {k: v for k, v in patch.model_dump(exclude_unset=True).items() if v is not None}
        updated = Agent.model_validate(
            {**current.model_dump(), **changes, "updated_at": now_iso(), "version": current.version + 1}
        )
        try:
            await self._put(
                tenant, updated, "attribute_exists(pk) AND version = :v", {":v": {"N": str(current.version)}}
            )
        except Conflict as e:
            raise Conflict(f"agent {agent_id} was changed or deleted meanwhile; read it again") from e
        return updated

    async def delete(self, tenant: str, agent_id: str) -> None:
        try:
            await self._table.call(
                lambda c: c.delete_item(
                    TableName=self._table.name,
                    Key=_key(tenant, agent_id),
                    ConditionExpression="attribute_exists(pk)",
                )
            )
        except ConditionFailed as e:
            raise NotFound(f"agent {agent_id} not found") from e

    async def _put(self, tenant: str, agent: Agent, condition: str, values: dict[str, Any]) -> None:
        item: dict[str, Any] = {
            **_key(tenant, agent.id),
            "data": {"S": agent.model_dump_json()},
            "version": {"N": str(agent.version)},
        }
        check_item_size(item)  # a 413 before the request (bodies are bounded: this is a last defence)
        request: dict[str, Any] = {
            "TableName": self._table.name,
            "Item": item,
            "ConditionExpression": condition,
        }
        if values:
            request["ExpressionAttributeValues"] = values
        try:
            await self._table.call(lambda c: c.put_item(**request))
        except ConditionFailed as e:
            raise Conflict(f"agent {agent.id} already exists or changed meanwhile") from e
