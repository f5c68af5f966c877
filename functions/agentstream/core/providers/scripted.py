"""A deterministic provider for demos and tests: no network, same input gives the same stream.

Behaviour, from the agent's ``model.options``:
- ``reply`` (str): the answer text. Default: a short answer that quotes the user's message.
- ``repeat`` (int, default 1): the reply is ``reply`` this many times (long replies, small agents).
- ``delta_chars`` (int, default 3): characters per streamed delta; ``delay_ms`` (default 20, at most
  10,000) between them.
- ``fail_after`` (int): raise an upstream error after this many deltas (to exercise error paths).
- ``stall_after`` (int): stop producing (but stay open) after this many deltas (timeouts, cancellation),
  as a real upstream that stalls: after the upstream read timeout (``AGENTSTREAM_UPSTREAM_READ_TIMEOUT``)
  the call fails with ``upstream_timeout``. So no agent definition holds a run open indefinitely.
The options are checked when an agent is created (``_options.py``); out-of-range values that reach
the provider anyway are clamped to the same bounds.
Tools: when the agent has ``calculator`` and the user's last message contains arithmetic such as
``2+3*4``, the first step asks for the calculator, and the next step answers with its result; likewise
``current_time`` when the message asks for the time, and ``remember`` for "remember that ...".
Usage is counted in whitespace-separated words, which keeps it deterministic.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from agentstream.core.events import Usage
from agentstream.core.providers._options import MAX_DELAY_MS, MAX_SCRIPTED_CHARS
from agentstream.core.providers.base import (
    Message,
    ModelRequest,
    ProviderEvent,
    StepEnd,
    TextChunk,
    ToolCallRequest,
    UsageReport,
)
from agentstream.errors import UpstreamError, UpstreamTimeout

if TYPE_CHECKING:
    from agentstream.config import Settings

__all__ = ["ScriptedProvider", "create"]

_ARITHMETIC = re.compile(r"[-+(]*\d+(?:\.\d+)?(?:\s*[-+*/^%]+\s*[-+(]*\d+(?:\.\d+)?\)*)+")
_REMEMBER = re.compile(r"\bremember(?: that)?\s+(.+)", re.IGNORECASE)
_TIME = re.compile(r"\b(time|clock|date)\b|几点|时间", re.IGNORECASE)


def _words(messages: list[Message] | tuple[Message, ...] | Any) -> int:
    return sum(len(m.content.split()) for m in messages)


class ScriptedProvider:
    def __init__(self, *, stall_seconds: float = 60.0) -> None:
        # how long a stall lasts before the call fails, as a real upstream's read timeout
        self._stall_seconds = stall_seconds

    async def stream(self, request: ModelRequest) -> AsyncIterator[ProviderEvent]:
        options = request.extra
        messages = list(request.messages)
        last = messages[-1]
        tool_names = {t.name for t in request.tools}
        usage = Usage(input_tokens=_words(messages))

        call = self._tool_call(last, tool_names)
        if call is not None:
            yield call
            yield UsageReport(usage)
            yield StepEnd("tool_calls")
            return

        if last.role == "tool":
            text = f"The result is {last.content}."
        else:
            text = str(options.get("reply") or f"You said: {last.content}. This is the scripted provider.")
            repeat = min(max(1, int(options.get("repeat", 1))), MAX_SCRIPTED_CHARS // max(1, len(text)) + 1)
            text = (text * repeat)[:MAX_SCRIPTED_CHARS]
        size = max(1, int(options.get("delta_chars", 3)))
        delay = min(max(0.0, float(options.get("delay_ms", 20))), MAX_DELAY_MS) / 1000
        fail_after = options.get("fail_after")
        stall_after = options.get("stall_after")
        for n, start in enumerate(range(0, len(text), size)):
            if fail_after is not None and n >= int(fail_after):
                raise UpstreamError("scripted provider failure (fail_after)")
            if stall_after is not None and n >= int(stall_after):
                await asyncio.sleep(self._stall_seconds)
                raise UpstreamTimeout("the model API stopped sending (read timeout)")
            if n and delay:
                await asyncio.sleep(delay)
            yield TextChunk(text[start : start + size])
        usage.output_tokens = len(text.split())
        yield UsageReport(usage)
        yield StepEnd("stop")

    @staticmethod
    def _tool_call(last: Message, tool_names: set[str]) -> ToolCallRequest | None:
        if last.role != "user":
            return None
        call_id = f"call_{uuid.uuid5(uuid.NAMESPACE_OID, last.content).hex[:12]}"
        if "remember" in tool_names and (match := _REMEMBER.search(last.content)):
            return ToolCallRequest(call_id, "remember", {"fact": match.group(1).strip()})
        if "calculator" in tool_names and (match := _ARITHMETIC.search(last.content)):
            return ToolCallRequest(call_id, "calculator", {"expression": match.group(0).strip()})
        if "current_time" in tool_names and _TIME.search(last.content):
            return ToolCallRequest(call_id, "current_time", {"timezone": "UTC"})
        return None


async def create(settings: Settings) -> ScriptedProvider:
    return ScriptedProvider(stall_seconds=settings.upstream_read_timeout)
