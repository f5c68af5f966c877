"""What an agent's ``model.options`` may set, per provider: documented sampling options, bounded.

``model.options`` is sent with every model call (``ModelRequest.extra``), so it may only hold what
changes how the model samples, never what the request is about or what it costs beyond the agent's
own cap: no ``messages``, ``model``, ``stream``, ``n``, ``tools``, and no token cap past
``MAX_TOKENS``. Each provider lists its options here (name -> check); the checks are plain functions,
so this module costs nothing at import (the provider modules stay lazy).

- A new or changed agent with an option that is unknown, forbidden or out of range is refused
  (``check_options``: 422 naming the option and listing the allowed ones).
- A stored agent written before these rules may hold options they now refuse: its runs leave those
  out (``usable_options``) and say so in a ``metadata`` event (``options_ignored``), and the log.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["MAX_OPTIONS_BYTES", "MAX_TOKENS", "OPTIONS", "check_options", "usable_options"]

# The largest token cap an agent may ask for (``model.max_tokens`` has the same bound).
MAX_TOKENS = 200_000
# ``model.options`` as JSON (UTF-8) at most: an agent is one DynamoDB item (400 KB in all).
MAX_OPTIONS_BYTES = 32_768
# The scripted provider's bounds: no agent definition holds a stream open indefinitely with them.
MAX_DELAY_MS = 10_000
MAX_SCRIPTED_CHARS = 1_000_000

# a check returns what is wrong with a value, or None when it is fine
Check = Callable[[Any], str | None]


def _number(low: float, high: float) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return "must be a number"
        if not low <= value <= high:
            return f"must be between {low:g} and {high:g}"
        return None

    return check


def _integer(low: int, high: int) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be an integer"
        if not low <= value <= high:
            return f"must be between {low} and {high}"
        return None

    return check


def _strings(max_items: int, max_chars: int, *, single: bool = True) -> Check:
    """A list of at most ``max_items`` non-empty strings (or, with ``single``, one string)."""

    def check(value: Any) -> str | None:
        items = [value] if single and isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
            return "must be a list of non-empty strings" + (" or a string" if single else "")
        if len(items) > max_items or any(len(i) > max_chars for i in items):
            return f"holds at most {max_items} strings of at most {max_chars} characters"
        return None

    return check


def _choice(*values: str) -> Check:
    def check(value: Any) -> str | None:
        return None if value in values else f"must be one of {', '.join(values)}"

    return check


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _text(max_chars: int) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, str):
            return "must be a string"
        return None if len(value) <= max_chars else f"holds at most {max_chars} characters"

    return check


def _object(fields: Mapping[str, Check]) -> Check:
    """A JSON object of some of ``fields`` (each checked), nothing else."""

    def check(value: Any) -> str | None:
        if not isinstance(value, dict):
            return "must be an object"
        for name, item in value.items():
            inner = fields.get(name)
            if inner is None:
                return f"may only hold {', '.join(fields)} (not {name!r})"
            if (problem := inner(item)) is not None:
                return f"{name} {problem}"
        return None

    return check


def _response_format(value: Any) -> str | None:
    """OpenAI's ``response_format``: text, a JSON object, or a JSON schema (bounded by the total size)."""
    if not isinstance(value, dict) or value.get("type") not in ("text", "json_object", "json_schema"):
        return 'must be {"type": "text" | "json_object" | "json_schema", ...}'
    extra = set(value) - {"type", "json_schema"}
    if extra or ("json_schema" in value) != (value["type"] == "json_schema"):
        return 'takes "json_schema" (an object) with type json_schema only'
    if "json_schema" in value and not isinstance(value["json_schema"], dict):
        return "json_schema must be an object"
    return None


_TOKENS = _integer(1, MAX_TOKENS)

# provider -> option -> check. The documented sampling options of each API, nothing else.
OPTIONS: dict[str, dict[str, Check]] = {
    "openai": {
        "temperature": _number(0, 2),
        "top_p": _number(0, 1),
        "max_tokens": _TOKENS,
        "max_completion_tokens": _TOKENS,
        "presence_penalty": _number(-2, 2),
        "frequency_penalty": _number(-2, 2),
        "stop": _strings(4, 200),
        "seed": _integer(-(2**63), 2**63 - 1),
        "response_format": _response_format,
        "reasoning_effort": _choice("none", "minimal", "low", "medium", "high", "xhigh"),
        "verbosity": _choice("low", "medium", "high"),
        "parallel_tool_calls": _boolean,
        # sampling extensions of OpenAI-compatible servers (vLLM, llama.cpp, Ollama)
        "top_k": _integer(1, 1_000),
        "min_p": _number(0, 1),
        "repetition_penalty": _number(0, 2),
    },
    "anthropic": {
        "temperature": _number(0, 1),
        "top_p": _number(0, 1),
        "top_k": _integer(1, 1_000),
        "max_tokens": _TOKENS,
        "stop_sequences": _strings(16, 200, single=False),
    },
    "bedrock": {
        "inferenceConfig": _object(
            {
                "maxTokens": _TOKENS,
                "temperature": _number(0, 1),
                "topP": _number(0, 1),
                "stopSequences": _strings(4, 200, single=False),
            }
        ),
    },
    "scripted": {
        "reply": _text(MAX_SCRIPTED_CHARS),
        "repeat": _integer(1, 100_000),
        "delta_chars": _integer(1, 100_000),
        "delay_ms": _number(0, MAX_DELAY_MS),
        "fail_after": _integer(0, MAX_SCRIPTED_CHARS),
        "stall_after": _integer(0, MAX_SCRIPTED_CHARS),
    },
}


def _size(options: Mapping[str, Any]) -> int:
    """Bytes of ``options`` as JSON; past the bound when it cannot be written (nested too deep)."""
    try:
        text = json.dumps(options, ensure_ascii=False, separators=(",", ":"))
    except (RecursionError, TypeError, ValueError):
        return MAX_OPTIONS_BYTES + 1
    return len(text.encode("utf-8", "replace"))


def _problem(provider: str, name: str, value: Any) -> str | None:
    allowed = OPTIONS.get(provider, {})
    check = allowed.get(name)
    if check is None:
        listed = ", ".join(allowed) or "none"
        return f"model.options: {name!r} is not an option of provider {provider} (allowed: {listed})"
    if (problem := check(value)) is not None:
        return f"model.options: {name} {problem}"
    return None


def check_options(provider: str, options: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` (a 422) naming the first option that is not allowed, or too large options."""
    if (size := _size(options)) > MAX_OPTIONS_BYTES:
        raise ValueError(f"model.options: {size} bytes of JSON, at most {MAX_OPTIONS_BYTES}")
    for name, value in options.items():
        if (problem := _problem(provider, name, value)) is not None:
            raise ValueError(problem)


def usable_options(provider: str, options: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(the options a run may send, the names of those it leaves out): for agents stored before the
    rules, or with options too large altogether (then none is sent)."""
    if _size(options) > MAX_OPTIONS_BYTES:
        return {}, sorted(options)
    kept = {name: value for name, value in options.items() if _problem(provider, name, value) is None}
    return kept, sorted(set(options) - set(kept))
