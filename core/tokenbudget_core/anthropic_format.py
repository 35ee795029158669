"""Translate core messages and tool definitions into Anthropic's Messages API shape.

System and developer messages become the top-level ``system`` string; assistant tool
calls become ``tool_use`` blocks; tool results become ``tool_result`` blocks in a
user turn; consecutive turns of the same role are merged (Anthropic requires
alternation); images become base64 or URL ``image`` blocks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import InvalidInputError, InvalidMessageError
from .messages import ImagePart, Message, MessageLike, TextPart, to_messages

__all__ = ["to_anthropic_request", "to_anthropic_tools"]

_DATA_URL = re.compile(r"^data:(?P<mime>image/[\w.+-]+);base64,(?P<data>.*)$", re.DOTALL)


def _content_blocks(m: Message, i: int) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    parts = (TextPart(text=m.content),) if isinstance(m.content, str) else m.content
    for part in parts:
        if isinstance(part, TextPart):
            if part.text:
                blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            match = _DATA_URL.match(part.url)
            if match:
                source: dict[str, Any] = {
                    "type": "base64",
                    "media_type": match["mime"],
                    "data": match["data"],
                }
            else:
                source = {"type": "url", "url": part.url}
            blocks.append({"type": "image", "source": source})
    if m.role == "assistant":
        for j, call in enumerate(m.tool_calls):
            try:
                args = json.loads(call.arguments) if call.arguments else {}
            except ValueError as e:
                raise InvalidMessageError(
                    f"messages[{i}].tool_calls[{j}].arguments", "is not valid JSON", value=call.arguments
                ) from e
            blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": args})
    return blocks


def to_anthropic_tools(tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI-style function tools to Anthropic tools; Anthropic-style tools pass through."""
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        if "input_schema" in tool or tool.get("type", "").startswith(("web_search", "bash", "text_editor")):
            out.append(dict(tool))
            continue
        fn = tool.get("function") if tool.get("type") == "function" else tool
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            raise InvalidInputError(f"tools[{i}]", "a tool needs a name", value=tool)
        converted: dict[str, Any] = {
            "name": fn["name"],
            "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
        }
        if fn.get("description"):
            converted["description"] = fn["description"]
        out.append(converted)
    return out


def to_anthropic_request(
    messages: Sequence[MessageLike], tools: Sequence[Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """Build the ``system``/``messages``/``tools`` part of a Messages API request.

    Raises:
        InvalidMessageError: A message is malformed, or tool-call arguments are not JSON.
    """
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, m in enumerate(to_messages(messages)):
        if m.role in ("system", "developer"):
            system.append(m.text)
            continue
        if m.role in ("tool", "function"):
            role = "user"
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": m.tool_call_id or m.name or ""}
            if m.text:
                result["content"] = m.text
            blocks = [result]
        else:
            role = m.role
            blocks = _content_blocks(m, i)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    request: dict[str, Any] = {"messages": turns}
    if system:
        request["system"] = "\n\n".join(system)
    if tools:
        request["tools"] = to_anthropic_tools(tools)
    return request
