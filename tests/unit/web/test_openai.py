"""The OpenAI request as a turn of the agent (the wire format itself is tested with the SDK, e2e)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from agentstream.core.providers.base import Message, ToolCallRequest, ToolSpec
from agentstream.errors import BadRequest
from agentstream.web.openai import ChatCompletionRequest

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def request(*messages: dict[str, Any], **fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": list(messages), **fields})


def test_the_last_user_message_is_the_turn_and_the_rest_its_history() -> None:
    turn = request(
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": "ok", "annotations": []},
        {"role": "user", "content": "now", "name": "jane"},
        tools=[WEATHER],
        user="u-1",
    ).to_input("s1")
    assert turn.message == "now"
    assert turn.history == [Message("system", "Be brief."), Message("user", "ab"), Message("assistant", "ok")]
    assert (turn.user_id, turn.session_id, turn.keeps_turn) == ("u-1", "s1", True)
    assert turn.client_tools == [ToolSpec("get_weather", "", {"type": "object"})]
    assert (
        not request({"role": "user", "content": "x"}, tools=[WEATHER], tool_choice="none")
        .to_input(None)
        .client_tools
    )


def test_tool_results_are_the_turn_and_keep_their_functions_name() -> None:
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    turn = request(
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ).to_input(None)
    assert turn.message is None
    assert turn.history[1] == Message(
        "assistant", "", tool_calls=(ToolCallRequest("c1", "get_weather", {"city": "Paris"}),)
    )
    assert turn.history[2] == Message("tool", "sunny", tool_call_id="c1", name="get_weather")
    assert (turn.user_text, turn.keeps_turn) == ("weather?", False)


def test_any_user_string_is_a_stable_user_id() -> None:
    first = request({"role": "user", "content": "x"}, user="Jane Doe <jane@example.com>").to_input(None)
    again = request({"role": "user", "content": "y"}, user="Jane Doe <jane@example.com>").to_input(None)
    assert first.user_id == again.user_id
    assert first.user_id.startswith("user:")
    assert request({"role": "user", "content": "x"}).to_input(None).user_id == "anonymous"


@pytest.mark.parametrize(
    ("messages", "fields", "error"),
    [
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], {}, "send text"),
        ([{"role": "user", "content": "x"}], {"n": 2}, "less than or equal to 1"),
        ([{"role": "function", "content": "x", "name": "f"}], {}, "does not match any of the expected tags"),
    ],
)
def test_what_is_refused_says_why(messages: list[dict[str, Any]], fields: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        request(*messages, **fields)


def test_a_conversation_must_end_with_the_user_or_a_tool() -> None:
    with pytest.raises(BadRequest, match="last message"):
        request({"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}).to_input(None)
    bad = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}
    with pytest.raises(BadRequest, match="not JSON"):
        request(
            {"role": "assistant", "content": None, "tool_calls": [bad]},
            {"role": "tool", "tool_call_id": "c1", "content": "x"},
        ).to_input(None)
