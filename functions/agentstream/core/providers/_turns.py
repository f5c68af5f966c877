"""The conversation as Anthropic and Bedrock take it: a system text, then alternating turns.

Both APIs take the instructions apart from the messages, want user and assistant turns to alternate
(tool results belong to the user's turn that follows the assistant's tool calls), start with the user,
and reject empty text. The agent loop's messages are a plain list, so they are regrouped here; each
provider then writes the turns in its own block format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Sequence

    from agentstream.core.providers.base import Message

__all__ = ["Turn", "turns"]


@dataclass(slots=True)
class Turn:
    role: Literal["user", "assistant"]
    messages: list[Message] = field(default_factory=list)


def turns(messages: Sequence[Message]) -> tuple[str, list[Turn]]:
    """The system text (system messages joined), and the other messages as alternating turns.

    Consecutive messages of one side share a turn; messages with nothing in them are left out; a
    history that starts with the assistant (a window cut after a user message) starts at the next user
    turn instead.
    """
    system = "\n\n".join(m.content for m in messages if m.role == "system" and m.content)
    grouped: list[Turn] = []
    for message in messages:
        if message.role == "system":
            continue
        if message.role != "tool" and not message.content and not message.tool_calls:
            continue
        role: Literal["user", "assistant"] = "assistant" if message.role == "assistant" else "user"
        if grouped and grouped[-1].role == role:
            grouped[-1].messages.append(message)
        else:
            grouped.append(Turn(role, [message]))
    while grouped and grouped[0].role == "assistant":
        grouped.pop(0)
    return system, grouped
