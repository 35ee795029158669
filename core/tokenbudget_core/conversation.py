"""The structure of a conversation that fitting and memory must respect.

A conversation is cut only between *units*: a unit is one message, except that an
assistant message with tool calls and the tool results answering them form one unit
(parallel calls included), so a call is never separated from its results. These
helpers read roles and tool ids from dicts or :class:`~tokenbudget_core.messages.Message`
objects without converting whole histories.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import InvalidMessageError
from .messages import Message, MessageLike

__all__ = ["MessageView", "role_of", "unit_start"]

_SYSTEM_ROLES = frozenset({"system", "developer"})


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

    def unit_start(self, end: int) -> int:
        """Index of the first message of the unit that ends at ``end``.

        Raises:
            InvalidMessageError: A tool result has no matching call before it.
        """
        return unit_start(self._messages, end, self.role)


def unit_start(messages: Sequence[MessageLike], end: int, role: Callable[[int], str] | None = None) -> int:
    """Walk back from ``end`` over tool results to the assistant message that made the calls.

    Raises:
        InvalidMessageError: A tool result's call is not in the assistant message before it.
    """
    get_role = role or (lambda i: role_of(messages[i], i))
    if get_role(end) != "tool":
        return end
    pending: dict[str, int] = {}
    i = end
    while i >= 0 and get_role(i) == "tool":
        rid = _result_id(messages[i])
        if rid is None:
            raise InvalidMessageError(f"messages[{i}].tool_call_id", "a tool result needs the id of its call")
        pending[rid] = i
        i -= 1
    if i < 0 or get_role(i) != "assistant" or not set(pending) <= _call_ids(messages[i]):
        missing = (
            sorted(pending)
            if i < 0 or get_role(i) != "assistant"
            else sorted(set(pending) - _call_ids(messages[i]))
        )
        first = min(pending[m] for m in missing)
        raise InvalidMessageError(
            f"messages[{first}].tool_call_id",
            f"tool result without its call (no assistant tool call with id {missing[0]!r} right before it)",
            fix="keep each assistant tool-call message directly before its tool results",
        )
    return i
