"""Translate LangChain messages into tokenbudget core messages."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from tokenbudget_core.errors import InvalidMessageError
from tokenbudget_core.messages import ImagePart, Message, Part, TextPart, ToolCall, to_part

__all__ = ["to_core_message", "to_core_messages"]

_ROLE_BY_TYPE = {
    "system": "system",
    "human": "user",
    "ai": "assistant",
    "tool": "tool",
    "function": "function",
}


def _parts(content: str | list[Any], where: str) -> str | tuple[Part, ...]:
    if isinstance(content, str):
        return content
    parts: list[Part] = []
    for i, block in enumerate(content):
        if isinstance(block, str):
            parts.append(TextPart(text=block))
            continue
        if not isinstance(block, dict):
            raise InvalidMessageError(f"{where}.content[{i}]", "must be a string or a content block dict")
        kind = block.get("type")
        if kind in ("text", "image_url"):  # OpenAI-format blocks: the core parses them
            parts.append(to_part(block, where=f"{where}.content[{i}]"))
        elif kind == "image":  # LangChain standard content block
            if block.get("url"):
                parts.append(ImagePart(url=str(block["url"])))
            elif block.get("base64"):
                mime = block.get("mime_type", "image/png")
                parts.append(ImagePart(url=f"data:{mime};base64,{block['base64']}"))
            else:
                raise InvalidMessageError(f"{where}.content[{i}]", "an image block needs 'url' or 'base64'")
        elif kind in (
            "tool_call",
            "tool_use",
            "server_tool_use",
            "reasoning",
            "thinking",
            "redacted_thinking",
        ):
            continue  # tool calls come from AIMessage.tool_calls; reasoning is not re-sent as input
        else:
            raise InvalidMessageError(
                f"{where}.content[{i}].type",
                f"unsupported content block type {kind!r}",
                fix="supported: 'text', 'image_url', 'image'",
            )
    return tuple(parts)


def to_core_message(message: BaseMessage, *, where: str = "message") -> Message:
    """Convert one LangChain message.

    Raises:
        InvalidMessageError: The message type or a content block is not supported.
    """
    if not isinstance(message, BaseMessage):
        raise InvalidMessageError(where, f"expected a LangChain BaseMessage, got {type(message).__name__}")
    role = message.role if isinstance(message, ChatMessage) else _ROLE_BY_TYPE.get(message.type)
    if role is None:
        raise InvalidMessageError(f"{where}.type", f"unsupported message type {message.type!r}")
    calls: tuple[ToolCall, ...] = ()
    if isinstance(message, AIMessage):
        calls = tuple(
            ToolCall(id=c.get("id") or "", name=c["name"], arguments=json.dumps(c.get("args", {})))
            for c in message.tool_calls
        )
    return Message(
        role=role,  # type: ignore[arg-type]
        content=_parts(message.content, where),
        name=message.name,
        tool_calls=calls,
        tool_call_id=message.tool_call_id if isinstance(message, ToolMessage) else None,
    )


def to_core_messages(messages: Sequence[BaseMessage]) -> list[Message]:
    """Convert LangChain messages, naming ``messages[i]`` in errors.

    Plain-text system, human and AI messages (no tool calls) are converted once and then reused
    (core messages are immutable), so a growing history is not translated again on every call.
    """
    out = []
    for i, m in enumerate(messages):
        cls = type(m)
        content = m.content
        if cls in _PLAIN and type(content) is str and not (cls is AIMessage and m.tool_calls):  # type: ignore[attr-defined]
            key = (cls, content, m.name)
            found = _converted.get(key)
            if found is None:
                found = to_core_message(m, where=f"messages[{i}]")
                if len(_converted) >= _CONVERTED_MAX:
                    _converted.clear()
                _converted[key] = found
            out.append(found)
        else:
            out.append(to_core_message(m, where=f"messages[{i}]"))
    return out


_PLAIN: frozenset[type[BaseMessage]] = frozenset({SystemMessage, HumanMessage, AIMessage})
"""Message classes whose conversion depends only on their type, text and name."""
_CONVERTED_MAX = 4_096
_converted: dict[tuple[type[BaseMessage], str, str | None], Message] = {}
