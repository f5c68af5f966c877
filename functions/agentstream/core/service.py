"""Chat runs: load the agent, its history and memories, start the run, keep the turn afterwards.

This is the use case the HTTP routes call; it knows nothing of HTTP, Lambda or DynamoDB (the store is
any object with the small Protocols of ``core/ports.py``).

Before the model is called there are two store round trips, one after the other: the agent and the
tenant's limits (``RunLimiter``: a refused start raises ``RateLimited`` holding nothing), then
(in parallel) its history, the user's memories, the run record, the provider and the tool lists of
the agent's MCP servers (cached per process). After the last token
nothing waits: ``Done`` goes out first; the conversation turn and the run's final status are written
after it, within the time left.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from agentstream.core.agent import Turn, run_agent
from agentstream.core.control import RunControl, io_deadline
from agentstream.core.events import Done
from agentstream.core.ids import new_id
from agentstream.core.memory import relevant
from agentstream.core.ports import MemoryItem, RunLimits, RunRecord, RunSlot
from agentstream.core.providers import create_provider
from agentstream.core.providers.base import Message, ToolSpec
from agentstream.core.recorder import RunRecorder
from agentstream.core.runs import RunHandle
from agentstream.core.telemetry import NO_TELEMETRY, RunInfo, Telemetry
from agentstream.core.tools import BUILTIN_TOOLS, RunTools, Tool, remember_tool
from agentstream.errors import BadRequest, Conflict, RateLimited, StoreUnavailable

if TYPE_CHECKING:
    from agentstream.config import Settings
    from agentstream.core.agents import Agent
    from agentstream.core.ports import ChatStore
    from agentstream.core.providers import ModelChoice
    from agentstream.core.providers.base import ModelProvider

__all__ = ["ChatInput", "ChatService"]

logger = logging.getLogger(__name__)

ProviderFactory = Callable[["ModelChoice", "Settings"], Awaitable["ModelProvider"]]

# What the end of an invocation keeps for the run's last writes after a timeout's Done.
_LAST_WRITES_SECONDS = 0.25
# The longest a cancel request waits for its flag to be written (a run of this process stops first).
_CANCEL_WRITE_SECONDS = 2.0


@dataclasses.dataclass(frozen=True, slots=True)
class ChatInput:
    """One user message to an agent (the HTTP layer validates and builds it)."""

    # None: the turn's input is the tool results that end ``history``
    message: str | None
    user_id: str = "anonymous"
    session_id: str | None = None
    # max characters per content event (None: the configured default, 0: each model delta as it came)
    chunk_size: int | None = None
    # the conversation before ``message``, as the caller keeps it. None: the session's stored history.
    # With a history of its own the turn is stored in the session only when ``session_id`` is given.
    history: Sequence[Message] | None = None
    # tools the caller runs itself (``Done.pending_tool_calls``); their names differ from the agent's
    client_tools: Sequence[ToolSpec] = ()
    # record the run as its session's running run, so that a reader can find it (resume by session)
    resumable: bool = False

    @property
    def keeps_turn(self) -> bool:
        """Whether the turn belongs in the session's stored history."""
        return self.history is None or self.session_id is not None

    @property
    def user_text(self) -> str:
        """The user's words of this turn (of the last user message when the input is tool results)."""
        if self.message is not None:
            return self.message
        last = next((m for m in reversed(self.history or ()) if m.role == "user"), None)
        return "" if last is None else last.content


def _system_prompt(agent: Agent, memories: list[MemoryItem]) -> str:
    if not memories:
        return agent.instructions
    facts = "\n".join(f"- {m.content}" for m in memories)
    return f"{agent.instructions}\n\nWhat you remember about this user:\n{facts}"


class ChatService:
    def __init__(
        self,
        store: ChatStore,
        settings: Settings,
        providers: ProviderFactory = create_provider,
        telemetry: Telemetry = NO_TELEMETRY,
    ) -> None:
        self.store = store
        self.settings = settings
        self._providers = providers
        self.telemetry = telemetry
        # runs in flight in this process, by (tenant, run id), so a cancel request reaches them at once
        self.active: dict[tuple[str, str], RunHandle] = {}
        # slots being given back by runs that ended without their Done
        self._releasing: set[asyncio.Task[None]] = set()

    async def start(
        self,
        tenant: str,
        agent_id: str,
        request: ChatInput,
        *,
        invocation_deadline: float | None = None,
        started: float | None = None,
    ) -> RunHandle:
        """Prepare a run and start it. Errors raised here come before any event (plain HTTP errors).

        ``invocation_deadline`` (``time.monotonic()``) is when the hosting invocation ends (Lambda);
        ``max_run_seconds`` after the start bounds it the same way outside Lambda. The run ends
        ``deadline_margin_ms`` before that end (``done`` status ``timeout``), its last writes by it.
        """
        settings = self.settings
        started = time.monotonic() if started is None else started
        _check_input(request, settings.max_message_chars)
        end = started + settings.max_run_seconds
        if invocation_deadline is not None:
            end = min(end, invocation_deadline)
        io_deadline.set(end - _LAST_WRITES_SECONDS)
        control = RunControl(
            end - settings.deadline_margin_ms / 1000, idle_seconds=settings.idle_timeout_seconds
        )

        run_id = new_id("run")
        limits = RunLimits(settings.rate_limit_per_minute, settings.max_concurrent_runs)
        # the tenant's limits are checked beside the agent's read (the same round trip)
        agent, slot = await self._agent_and_slot(tenant, agent_id, run_id, _epoch_ms(end), limits)
        try:
            return await self._start(tenant, agent, request, run_id, slot, started, end, control)
        except BaseException:
            if slot is not None:
                await self._release(slot, started=False)
            raise

    async def _agent_and_slot(
        self, tenant: str, agent_id: str, run_id: str, deadline_at: int, limits: RunLimits
    ) -> tuple[Agent, RunSlot | None]:
        """The agent, and the run's place within the tenant's limits (None: no limits), in parallel.
        Raises (NotFound, RateLimited, ...) holding nothing."""
        if limits.off:
            return await self.store.agents.get(tenant, agent_id), None
        agent, slot = await asyncio.gather(
            self.store.agents.get(tenant, agent_id),
            self.store.limits.acquire(tenant, run_id, deadline_at=deadline_at, limits=limits),
            return_exceptions=True,
        )
        if isinstance(slot, BaseException):
            if isinstance(slot, RateLimited):
                logger.info("tenant %s refused a run: %s", tenant, slot.message)
            raise agent if isinstance(agent, BaseException) else slot
        if isinstance(agent, BaseException):
            await self._release(slot, started=False)
            raise agent
        return agent, slot

    async def _release(self, slot: RunSlot, *, started: bool = True) -> None:
        try:
            await self.store.limits.release(slot, started=started)
        except Exception:
            logger.warning("run %s: could not give back its place within the limits", slot.run_id)

    async def _start(
        self,
        tenant: str,
        agent: Agent,
        request: ChatInput,
        run_id: str,
        slot: RunSlot | None,
        started: float,
        end: float,
        control: RunControl,
    ) -> RunHandle:
        settings = self.settings
        if clash := sorted({t.name for t in request.client_tools} & set(agent.tools)):
            raise BadRequest(f"tool name(s) {', '.join(clash)} are taken by the agent's own tools")
        if any(t.name.startswith("mcp__") for t in request.client_tools):
            raise BadRequest("tool names starting with mcp__ are kept for the agent's MCP tools")
        session_id = request.session_id or "default"
        user_id = request.user_id
        remembers = agent.memory.enabled or "remember" in agent.tools
        # other instances compare this with their clock: past it (and a grace), the run is lost
        record = RunRecord(run_id, agent.id, session_id, user_id, deadline_at=_epoch_ms(end))
        results = await asyncio.gather(
            self.store.conversations.recent(
                tenant, agent.id, user_id, session_id, limit=agent.memory.history_messages
            )
            if agent.memory.enabled and request.history is None
            else _nothing(),
            self.store.memories.list(tenant, agent.id, user_id) if remembers else _nothing(),
            self._providers(agent.model, settings),
            self.store.runs.create(tenant, record),
            self.store.active_runs.put(tenant, agent.id, session_id, run_id, until_ms=_epoch_ms(end))
            if request.resumable
            else _nothing(),
            _mcp_tools(agent.tools, settings),
            return_exceptions=True,
        )
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            if not isinstance(results[3], BaseException):  # the run was recorded: it did not start
                await self._abandon(tenant, run_id)
            raise failure
        stored, memories, provider, mcp = results[0], results[1], results[2], results[5]
        assert isinstance(stored, list)
        assert isinstance(memories, list)
        assert isinstance(mcp, RunTools)

        remembered: list[str] = []

        async def save(fact: str) -> str:
            item = await self.store.memories.add(tenant, agent.id, user_id, fact)
            if item.id not in remembered and all(m.id != item.id for m in memories):
                remembered.append(item.id)
            return f"remembered: {item.content}"

        tools: dict[str, Tool] = {**BUILTIN_TOOLS, "remember": remember_tool(save), **mcp.tools}
        # the agent's MCP entries become the tools they name, as the model will see them
        agent_tools = [t for t in agent.tools if not t.startswith("mcp:")] + list(mcp.tools)
        history = [Message(m.role, m.content) for m in stored] if request.history is None else request.history
        observer = self.telemetry.run_started(
            RunInfo(run_id, tenant, agent.id, agent.name, agent.model.provider, agent.model.name, session_id)
        )
        turn = Turn(
            run_id=run_id,
            agent=agent.model_copy(
                update={
                    "instructions": _system_prompt(agent, relevant(memories, request.user_text)),
                    "tools": agent_tools,
                }
            ),
            session_id=session_id,
            user_id=user_id,
            message=request.message,
            history=history,
            client_tools=request.client_tools,
            notice={"mcp_unavailable": mcp.unavailable} if mcp.unavailable else None,
            started=started,
            control=control,
            observer=observer,
        )

        def keeps_turn(done: Done) -> bool:
            return (
                done.status == "completed"
                and not done.pending_tool_calls  # the answer goes on in the caller's next turn
                and agent.memory.enabled
                and request.keeps_turn
            )

        def finalize(done: Done) -> Done:
            return dataclasses.replace(
                done,
                memories_updated=keeps_turn(done) or bool(remembered),
                memories_count=len(memories) + len(remembered),
            )

        released = False

        async def release() -> None:
            """Give the run's place within the tenant's limits back (once; never raises)."""
            nonlocal released
            if slot is not None and not released:
                released = True
                await self._release(slot)

        def finished() -> None:
            self.active.pop((tenant, run_id), None)
            if slot is not None and not released:  # ended without its Done (cancelled outright)
                task = asyncio.get_running_loop().create_task(release())
                self._releasing.add(task)
                task.add_done_callback(self._releasing.discard)

        async def after_done(done: Done) -> None:
            kept, _ = await asyncio.gather(keep_turn(done), release(), return_exceptions=True)
            if isinstance(kept, BaseException):
                raise kept

        async def keep_turn(done: Done) -> None:
            if keeps_turn(done):
                await self.store.conversations.append_turn(
                    tenant,
                    agent.id,
                    user_id,
                    session_id,
                    run_id=run_id,
                    user_text=request.user_text,
                    assistant_text=done.final_response,
                )

        chunk_size = settings.sse_chunk_size if request.chunk_size is None else request.chunk_size
        recorder = RunRecorder(
            self.store.runs,
            tenant,
            run_id,
            on_cancel=control.stop,
            flush_seconds=settings.log_flush_seconds,
            heartbeat_seconds=settings.heartbeat_seconds,
        )
        recorder.start()
        handle = RunHandle(
            run_id,
            session_id,
            run_agent(turn, provider, max_steps=settings.max_steps, tools=tools),
            control=control,
            recorder=recorder,
            chunk_size=chunk_size,
            flush_seconds=settings.sse_flush_ms / 1000,
            finalize=finalize,
            after_done=after_done,
            finish_by=end - _LAST_WRITES_SECONDS,
            observer=observer,
        )
        self.active[(tenant, run_id)] = handle
        handle.on_finished(finished)
        return handle

    async def _abandon(self, tenant: str, run_id: str) -> None:
        """A recorded run that could not start: mark it ended (best effort), so it never reads running."""
        try:
            await self.store.runs.finish(
                tenant, run_id, status="error", usage={}, metrics={}, last_seq=-1, log_complete=True
            )
        except Exception:
            logger.warning("run %s: could not mark the run that failed to start", run_id)

    async def cancel(self, tenant: str, run_id: str) -> bool:
        """Ask a run to stop, wherever it runs; return whether it ran here.

        A run of this process stops at once, before the store is asked anything and whatever it
        answers. Then the flag is written for other instances, within ``_CANCEL_WRITE_SECONDS``: for
        a run that is not here, a store that fails or does not answer in time is a
        ``StoreUnavailable`` (try again); for one that is, it only costs a warning.
        """
        handle = self.active.get((tenant, run_id))
        here = handle is not None and handle.done is None
        if handle is not None:
            handle.stop()
        try:
            async with asyncio.timeout(_CANCEL_WRITE_SECONDS):
                await self.store.runs.request_cancel(tenant, run_id)
        except (StoreUnavailable, TimeoutError) as e:
            if not here:
                raise StoreUnavailable("the cancel request could not be recorded; try again") from e
            logger.warning("run %s: stopped here, but its cancel flag was not recorded (%s)", run_id, e)
        except Conflict:
            if not here:
                raise  # it had already ended
        return here


def _check_input(request: ChatInput, max_chars: int) -> None:
    if request.message is None and not (request.history and request.history[-1].role == "tool"):
        raise BadRequest("a turn needs a user message, or tool results at the end of its history")
    for text in (request.message or "", *(m.content for m in request.history or ())):
        if len(text) > max_chars:
            raise BadRequest(f"message longer than {max_chars} characters")
    names = [t.name for t in request.client_tools]
    if len(set(names)) != len(names):
        raise BadRequest("tool names must not repeat")


async def _mcp_tools(entries: Sequence[str], settings: Settings) -> RunTools:
    """The agent's MCP tools; the MCP client is imported only by agents that have some."""
    if not any(t.startswith("mcp:") for t in entries):
        return RunTools({}, {})
    from agentstream.core.mcp import run_tools

    return await run_tools(entries, settings)


def _epoch_ms(monotonic: float) -> int:
    return int((time.time() + monotonic - time.monotonic()) * 1000)


async def _nothing() -> list[Any]:
    return []
