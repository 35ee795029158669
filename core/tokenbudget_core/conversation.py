"""The structure of a conversation that fitting and memory must respect.

A conversation is cut only between *units*: a unit is one message, except that an
assistant message with tool calls and the tool results answering them form one unit
(parallel calls included), so a call is never separated from its results. Legacy function
calling is read the same way: an assistant ``function_call`` and the ``function`` messages
right after it are one unit (a ``function`` message with no call before it, having no call id
to check, stays a unit of its own). These
helpers read roles and tool ids from dicts or :class:`~tokenbudget_core.messages.Message`
objects without converting whole histories.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import InvalidMessageError
from .messages import Message, MessageLike

__all__ = ["RESULT_ROLES", "MessageView", "role_of", "unit_start"]

_SYSTEM_ROLES = frozenset({"system", "developer"})
RESULT_ROLES = frozenset({"tool", "function"})
"""Roles of the messages that answer an assistant's call and belong to its unit: ``tool`` results
and legacy ``function`` results."""


def role_of(message: object, i: int) -> str:
    """The role of a message-like, validated cheaply (no full conversion)."""
    if isinstance(message, Message):
        return message.role
    if isinstance(message, Mapping):
        role = message.get("role")
        if isinstance(role, str):
            return role
        raise InvalidMessageError(f"messages[{i}].role", "is missing or not a string", value=role)
    raise InvalidMessageError(
        f"messages[{i}]", f"a message must be a dict or Message, got {type(message).__name__}", value=message
    )


def _call_ids(message: object) -> set[str]:
    if isinstance(message, Message):
        return {c.id for c in message.tool_calls}
    if isinstance(message, Mapping):
        calls: Any = message.get("tool_calls") or ()
        ids = {c.get("id") for c in calls if isinstance(c, Mapping)}
        return {i for i in ids if isinstance(i, str)}
    return set()


def _makes_legacy_call(message: object) -> bool:
    """Whether an assistant message made a legacy ``function_call`` (a core ``ToolCall`` without an id)."""
    if isinstance(message, Message):
        return any(not c.id for c in message.tool_calls)
    return isinstance(message, Mapping) and message.get("function_call") is not None


def _result_id(message: object) -> str | None:
    if isinstance(message, Message):
        return message.tool_call_id
    if isinstance(message, Mapping):
        value = message.get("tool_call_id")
        return value if isinstance(value, str) else None
    return None


class MessageView:
    """Lazy, cached structural facts about a message sequence (roles, units)."""

    __slots__ = ("_messages", "_roles")

    def __init__(self, messages: Sequence[MessageLike]) -> None:
        self._messages = messages
        self._roles: dict[int, str] = {}

    def role(self, i: int) -> str:
        """Role of message ``i`` (cached)."""
        r = self._roles.get(i)
        if r is None:
            r = self._roles[i] = role_of(self._messages[i], i)
        return r

    def is_system(self, i: int) -> bool:
        """Whether message ``i`` is a system or developer message."""
        return self.role(i) in _SYSTEM_ROLES

    def is_result(self, i: int) -> bool:
        """Whether message ``i`` answers a call (a tool or function result): part of the unit before it."""
        return self.role(i) in RESULT_ROLES

    def unit_start(self, end: int) -> int:
        """Index of the first message of the unit that ends at ``end``.

        Raises:
            InvalidMessageError: A tool result has no matching call before it.
        """
        return unit_start(self._messages, end, self.role)


def unit_start(messages: Sequence[MessageLike], end: int, role: Callable[[int], str] | None = None) -> int:
    """Walk back from ``end`` over tool (and function) results to the assistant message that made the calls.

    Raises:
        InvalidMessageError: A tool result's call is not in the assistant message before it.
    """
    get_role = role or (lambda i: role_of(messages[i], i))
    if get_role(end) not in RESULT_ROLES:
        return end
    pending: dict[str, int] = {}
    i = end
    while i >= 0 and (r := get_role(i)) in RESULT_ROLES:
        if r == "tool":
            rid = _result_id(messages[i])
            if rid is None:
                raise InvalidMessageError(
                    f"messages[{i}].tool_call_id", "a tool result needs the id of its call"
                )
            pending[rid] = i
        i -= 1
    caller = i >= 0 and get_role(i) == "assistant"
    if not pending:  # legacy function results only: no id to check them by
        return i if caller and _makes_legacy_call(messages[i]) else end
    if not caller or not set(pending) <= _call_ids(messages[i]):
        missing = sorted(pending) if not caller else sorted(set(pending) - _call_ids(messages[i]))
        first = min(pending[m] for m in missing)
        raise InvalidMessageError(
            f"messages[{first}].tool_call_id",
            f"tool result without its call (no assistant tool call with id {missing[0]!r} right before it)",
            fix="keep each assistant tool-call message directly before its tool results",
        )
    return i
