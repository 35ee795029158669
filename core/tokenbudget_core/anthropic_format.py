"""Translate core messages and tool definitions into Anthropic's Messages API shape.

System and developer messages become the top-level ``system`` string; assistant tool
calls become ``tool_use`` blocks; tool results become ``tool_result`` blocks in a
user turn (their content a string when it is text alone, else text and ``image`` blocks, so a
screenshot tool's images are counted); images become base64 or URL ``image`` blocks.

The body is the one the real call sends, normalised as langchain-anthropic normalises it, since
the API refuses what it does not normalise away (a 400, which a count would raise):

- A text block that is empty or whitespace-only (``not text.strip()``) is dropped, in a turn and
  in a tool result's blocks alike: the API refuses it ("text content blocks must contain
  non-whitespace text"). A tool result whose content is text alone keeps its text as it is.
- A turn left with no content (an empty assistant reply, a message of empty or whitespace-only
  text) is dropped unless it is the last one: the API refuses empty content anywhere but in a
  final assistant turn (a prefill), and langchain-anthropic drops such an assistant turn from the
  real request.
- Consecutive turns of the same role are then merged, as the API combines them.
- When the last turn is an assistant one (a prefill), the trailing whitespace of its last block is
  stripped (``rstrip()``) when that block is text, not when it is a ``tool_use``: the API refuses
  it ("final assistant content cannot end with trailing whitespace"). No other text is changed:
  the leading and inner whitespace of that turn, and all the whitespace of every other turn
  (an earlier assistant turn's trailing whitespace too), are billed as they are.

A ``tool_use`` block's ``input`` must be a JSON object. A call whose arguments are not one (the
malformed JSON of a call cut off by ``max_tokens``, which LangChain keeps in ``invalid_tool_calls``
and LlamaIndex as a string ``tool_kwargs``) is sent with ``input: {}``, as langchain-anthropic
sends it, rather than refused: such a call is answered by an error tool result and the conversation
goes on. What another integration sends for it is its own choice (llama-index-llms-anthropic passes
the string, which the API refuses), so :func:`build_anthropic_request` names every call converted
this way in :attr:`AnthropicRequest.guessed` and a count of the request is flagged inexact.
Call ids the API refuses (it wants ``^[a-zA-Z0-9_-]+$``; other providers mint ids such as
``functions.lookup:0``) are rewritten as langchain-anthropic rewrites them, in the call and in its
result alike (``toolu_`` and 24 hex digits of the id's SHA-256).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .counting import check_tools
from .errors import InvalidInputError
from .messages import ImagePart, Message, MessageLike, TextPart, to_messages

__all__ = ["AnthropicRequest", "build_anthropic_request", "to_anthropic_request", "to_anthropic_tools"]

_CALL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
_DATA_URL = re.compile(r"^data:(?P<mime>image/[\w.+-]+);base64,(?P<data>.*)$", re.DOTALL)


@dataclass(frozen=True, kw_only=True)
class AnthropicRequest:
    """The ``system``/``messages``/``tools`` of a Messages API request, and what was guessed."""

    body: dict[str, Any]
    """The request's ``messages`` (and ``system``, ``tools`` when there are any)."""
    guessed: tuple[str, ...] = ()
    """The tool calls whose arguments were not a JSON object and went as ``input: {}``
    (``messages[i].tool_calls[j].arguments``): what an integration sends for them may differ."""


def _call_id(call_id: str) -> str:
    """A call id as the API accepts it: unchanged when empty or valid, else ``toolu_`` + a hash."""
    if not call_id or _CALL_ID.match(call_id):
        return call_id
    return f"toolu_{hashlib.sha256(call_id.encode('utf-8', 'surrogatepass')).hexdigest()[:24]}"


def _tool_input(arguments: str) -> dict[str, Any] | None:
    """The ``input`` of a call with these arguments; ``None``: not a JSON object (sent as ``{}``,
    as langchain-anthropic does: ``json.loads(args or "{}")``, ``{}`` unless that is a dict)."""
    if not arguments:
        return {}
    try:
        value = json.loads(arguments)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _content_blocks(m: Message, i: int, guessed: list[str]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    parts = (TextPart(text=m.content),) if isinstance(m.content, str) else m.content
    for part in parts:
        if isinstance(part, TextPart):
            if part.text.strip():  # an empty or whitespace-only text block is refused by the API
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
            args = _tool_input(call.arguments)
            if args is None:
                guessed.append(f"messages[{i}].tool_calls[{j}].arguments")
                args = {}
            blocks.append({"type": "tool_use", "id": _call_id(call.id), "name": call.name, "input": args})
    return blocks


def _strip_prefill(blocks: list[dict[str, Any]]) -> None:
    """Strip the trailing whitespace of a final assistant turn (a prefill), as langchain-anthropic
    does: its last block's text when that block is text (not when it is a ``tool_use``)."""
    if blocks and blocks[-1]["type"] == "text":
        blocks[-1] = {**blocks[-1], "text": blocks[-1]["text"].rstrip()}


def _is_builtin_tool(tool: Mapping[str, Any]) -> bool:
    """An Anthropic-typed tool (``computer_20250124``, ``code_execution_...``, ``web_fetch_...``,
    ``mcp_toolset``...): any ``type`` but ``function`` and ``custom``, sent as the host sends it."""
    kind = tool.get("type")
    return isinstance(kind, str) and kind not in ("", "function", "custom")


def to_anthropic_tools(tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI-style function tools to Anthropic tools; Anthropic-style tools pass through.

    A tool with an ``input_schema``, or with a ``type`` other than ``function`` and ``custom`` (an
    Anthropic built-in tool: computer use, bash, text editor, code execution, web search and fetch,
    memory, MCP toolsets, tool search...), goes as it is, its type and options kept, as
    langchain-anthropic's ``bind_tools`` sends it: the API counts such a tool's own definition and
    system-prompt tokens from its type.

    Raises:
        InvalidInputError: A function tool has no name.
    """
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        if "input_schema" in tool or _is_builtin_tool(tool):
            out.append(dict(tool))
            continue
        # nested ({"type": "function", "function": {...}}) or flat (the Responses API's
        # {"type": "function", "name": ..., "parameters": ...}, and a bare {"name": ...})
        fn = tool.get("function") if tool.get("type") == "function" and "function" in tool else tool
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

    The body is what the real call sends (see the module doc): empty and whitespace-only text
    blocks are dropped, then turns left empty (but the last), same-role neighbours are merged, and
    a final assistant turn's last text block loses its trailing whitespace; no other text changes.
    Tool-call arguments that are not a JSON object go as ``input: {}`` (see the module doc;
    :func:`build_anthropic_request` says which).

    Raises:
        InvalidMessageError: A message is malformed.
        InvalidInputError: ``tools`` is not a list of tool definitions (dicts), or a function
            tool has no name.
    """
    return build_anthropic_request(messages, tools).body


def build_anthropic_request(
    messages: Sequence[MessageLike], tools: Sequence[Mapping[str, Any]] | None = None
) -> AnthropicRequest:
    """:func:`to_anthropic_request`, with the tool calls whose ``input`` was guessed.

    Example:
        >>> calls = [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"a": '}}]
        >>> req = build_anthropic_request([{"role": "assistant", "content": "", "tool_calls": calls}])
        >>> req.body["messages"][0]["content"][0]["input"], req.guessed
        ({}, ('messages[0].tool_calls[0].arguments',))

    Raises:
        InvalidMessageError: A message is malformed.
        InvalidInputError: ``tools`` is not a list of tool definitions (dicts), or a function
            tool has no name.
    """
    tools = check_tools(tools) or None
    guessed: list[str] = []
    system: list[str] = []
    converted: list[tuple[str, list[dict[str, Any]]]] = []
    for i, m in enumerate(to_messages(messages)):
        if m.role in ("system", "developer"):
            system.append(m.text)
            continue
        if m.role in ("tool", "function"):
            role = "user"
            result: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": _call_id(m.tool_call_id or m.name or ""),
            }
            content = _content_blocks(m, i, guessed)
            if any(block["type"] != "text" for block in content):
                result["content"] = content  # images too: sent as blocks, as langchain-anthropic does
            elif m.text:
                result["content"] = m.text
            blocks = [result]
        else:
            role = m.role
            blocks = _content_blocks(m, i, guessed)
        converted.append((role, blocks))
    turns: list[dict[str, Any]] = []
    for k, (role, blocks) in enumerate(converted):
        if not blocks and k < len(converted) - 1:
            continue  # refused by the API but in a final assistant turn; langchain-anthropic drops it
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)  # the API combines consecutive same-role turns too
        else:
            turns.append({"role": role, "content": blocks})
    if turns and turns[-1]["role"] == "assistant":
        _strip_prefill(turns[-1]["content"])
    request: dict[str, Any] = {"messages": turns}
    if system:
        request["system"] = "\n\n".join(system)
    if tools:
        request["tools"] = to_anthropic_tools(tools)
    return AnthropicRequest(body=request, guessed=tuple(guessed))
