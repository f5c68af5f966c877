"""Built-in tools the model may call. Each has a JSON-Schema spec and an async ``run``.

A tool failure is not a run failure: it becomes a ``ToolResult`` with ``is_error`` set, which the
model sees and can react to.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agentstream.core.providers.base import ToolSpec

__all__ = ["BUILTIN_TOOLS", "TOOL_NAMES", "RunTools", "Tool", "ToolFailed", "calculate", "remember_tool"]


class ToolFailed(Exception):
    """A tool could not do what it was asked; the message is shown to the model."""


@dataclass(frozen=True, slots=True)
class Tool:
    spec: ToolSpec
    run: Callable[[Mapping[str, Any]], Awaitable[str]]

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True, slots=True)
class RunTools:
    """Tools of one run from outside (MCP servers): name the model sees -> tool, and what could not
    be used (server or ``server/tool`` -> why), which the run reports instead of failing."""

    tools: dict[str, Tool]
    unavailable: dict[str, str]


_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_MAX_EXPRESSION = 500
_MAX_ABS = 10**100


def calculate(expression: str) -> int | float:
    """Evaluate arithmetic (+ - * / // % ** and parentheses on numbers) without ``eval``."""
    if len(expression) > _MAX_EXPRESSION:
        raise ToolFailed(f"expression longer than {_MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(expression.replace("^", "**").replace("×", "*").replace("÷", "/"), mode="eval")
    except SyntaxError as e:
        raise ToolFailed(f"not an arithmetic expression: {expression!r}") from e

    def ev(node: ast.AST) -> int | float:
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, int | float)
            and not isinstance(node.value, bool)
        ):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and (abs(right) > 1000 or abs(left) > 10**6):
                raise ToolFailed("exponent too large")
            try:
                value = _BINARY[type(node.op)](left, right)
            except ZeroDivisionError as e:
                raise ToolFailed("division by zero") from e
            except (OverflowError, ValueError) as e:
                raise ToolFailed(f"cannot compute: {e}") from e
            if isinstance(value, complex):
                raise ToolFailed("result is not a real number")
            if abs(value) > _MAX_ABS:
                raise ToolFailed("result too large")
            return value  # type: ignore[no-any-return]
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](ev(node.operand))  # type: ignore[no-any-return]
        raise ToolFailed(f"unsupported element in expression: {ast.dump(node)[:60]}")

    result = ev(tree.body)
    if isinstance(result, float) and (math.isnan(result) or math.isinf(result)):
        raise ToolFailed("result is not a finite number")
    if isinstance(result, float) and result.is_integer() and abs(result) < 2**53:
        return int(result)
    return result


async def _calculator(args: Mapping[str, Any]) -> str:
    expression = args.get("expression")
    if not isinstance(expression, str) or not expression.strip():
        raise ToolFailed('expected {"expression": "<arithmetic>"}')
    return str(calculate(expression))


async def _current_time(args: Mapping[str, Any]) -> str:
    name = args.get("timezone") or "UTC"
    if not isinstance(name, str):
        raise ToolFailed('expected {"timezone": "<IANA name>"}')
    try:
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ToolFailed(f"unknown timezone {name!r}") from e
    return datetime.now(UTC).astimezone(zone).isoformat(timespec="seconds")


BUILTIN_TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in (
        Tool(
            ToolSpec(
                "calculator",
                "Evaluate an arithmetic expression exactly, e.g. '2+3*4' or '(1.5**2)/3'.",
                {
                    "type": "object",
                    "properties": {"expression": {"type": "string", "description": "arithmetic expression"}},
                    "required": ["expression"],
                },
            ),
            _calculator,
        ),
        Tool(
            ToolSpec(
                "current_time",
                "The current date and time in a timezone (IANA name such as 'Asia/Shanghai'; default UTC).",
                {
                    "type": "object",
                    "properties": {"timezone": {"type": "string", "description": "IANA timezone name"}},
                },
            ),
            _current_time,
        ),
    )
}


REMEMBER_SPEC = ToolSpec(
    "remember",
    "Keep a fact about the user for later conversations (e.g. their name or a preference). "
    "Use it only for facts worth keeping; one short sentence per fact.",
    {
        "type": "object",
        "properties": {"fact": {"type": "string", "description": "the fact, as one short sentence"}},
        "required": ["fact"],
    },
)


def remember_tool(save: Callable[[str], Awaitable[str]]) -> Tool:
    """The ``remember`` tool of one run: ``save(fact)`` stores the fact for the run's agent and user."""

    async def run(args: Mapping[str, Any]) -> str:
        fact = args.get("fact")
        if not isinstance(fact, str) or not fact.strip():
            raise ToolFailed('expected {"fact": "<one short sentence>"}')
        return await save(fact)

    return Tool(REMEMBER_SPEC, run)


# every tool name an agent may list (``remember`` is bound to each run's user, so it is made per run)
TOOL_NAMES = frozenset({*BUILTIN_TOOLS, REMEMBER_SPEC.name})
