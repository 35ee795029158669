"""Translate LlamaIndex chat messages into tokenbudget core messages."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, ImageBlock, TextBlock, ToolCallBlock

from tokenbudget_core.counting import estimate_block
from tokenbudget_core.errors import InvalidInputError, InvalidMessageError
from tokenbudget_core.messages import ImagePart, Message, Part, TextPart, ToolCall

__all__ = [
    "check_messages",
    "check_prompt",
    "to_core_message",
    "to_core_messages",
    "to_core_request",
    "to_countable_message",
]

_ROLES = {
    "system": "system",
    "developer": "developer",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "function": "function",
    "chatbot": "assistant",
    "model": "assistant",
}


def _image(block: ImageBlock) -> ImagePart:
    if block.url:
        return ImagePart(url=str(block.url), detail=block.detail or "auto")  # type: ignore[arg-type]
    if isinstance(block.image, bytes) and block.image:
        data = block.image
        # ImageBlock keeps base64 bytes; raw bytes are encoded here.
        try:
            base64.b64decode(data, validate=True)
            encoded = data.decode()
        except ValueError:
            encoded = base64.b64encode(data).decode()
        mime = block.image_mimetype or "image/png"
        return ImagePart(url=f"data:{mime};base64,{encoded}", detail=block.detail or "auto")  # type: ignore[arg-type]
    if block.path is not None:  # a local file: read as LlamaIndex reads it to send it
        try:
            data = block.resolve_image().read()
        except (OSError, ValueError) as e:
            raise InvalidMessageError(
                "image", f"cannot read the ImageBlock's path: {e}", value=str(block.path)
            ) from e
        mime = block.image_mimetype or "image/png"
        encoded = base64.b64encode(data).decode()
        return ImagePart(url=f"data:{mime};base64,{encoded}", detail=block.detail or "auto")  # type: ignore[arg-type]
    raise InvalidMessageError(
        "image", "an ImageBlock needs a url, a path or image data", fix="set url=, path= or image="
    )


def _get(raw: Any, key: str) -> Any:
    """``raw[key]`` of a dict, ``raw.key`` of an SDK object (``None`` when absent)."""
    return raw.get(key) if isinstance(raw, Mapping) else getattr(raw, key, None)


def _has(raw: Any, key: str) -> bool:
    return key in raw if isinstance(raw, Mapping) else hasattr(raw, key)


def _arguments(value: Any) -> str:
    """A tool call's arguments as the JSON text the provider is sent.

    Text (OpenAI's ``arguments``, a streamed Anthropic ``input``) is kept as written; an object
    (Anthropic's ``input``, Gemini's ``args``, Ollama's ``arguments``, ``ToolCallBlock.tool_kwargs``)
    is serialised. A value JSON cannot hold (a ``date``, a ``Decimal``, a pydantic object) is
    written as its ``str()``: counting needs the text, what is sent is the integration's business.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):  # keys JSON cannot hold, or a circular structure
        return str(value)


def _kwargs_call(raw: Any) -> ToolCall | None:
    """One entry of ``additional_kwargs["tool_calls"]`` as a core call, in the shape its integration
    writes (``None`` when it names no tool):

    * OpenAI: ``{"id", "type": "function", "function": {"name", "arguments": "<JSON>"}}`` (or the
      SDK object);
    * Ollama: ``{"function": {"name", "arguments": {...}}}`` without an id;
    * Anthropic: ``ToolUseBlock.model_dump()``, ``{"id", "input", "name", "type": "tool_use"}``;
    * Bedrock Converse: ``{"toolUseId", "name", "input"}``;
    * Google GenAI: ``FunctionCall`` objects (or dicts) with ``name`` and ``args``.

    A call without an id (Ollama's) takes its function's name as its id, and so do Google GenAI's
    calls: those integrations' ``get_tool_calls_from_response`` give FunctionAgent the name as the
    tool id, which its tool result then carries as ``tool_call_id``. Every other call is answered
    by its own id only.
    """
    fn = _get(raw, "function")
    if fn is not None:  # OpenAI, Ollama
        name, call_id, args = _get(fn, "name"), _get(raw, "id"), _get(fn, "arguments")
    else:
        name = _get(raw, "name")
        gemini = _has(raw, "args") and not _has(raw, "input")
        call_id = None if gemini else _get(raw, "id") or _get(raw, "toolUseId")
        args = _get(raw, "args") if gemini else _get(raw, "input")
    if not name:
        return None
    return ToolCall(id=str(call_id or name), name=str(name), arguments=_arguments(args))


def _tool_calls(message: ChatMessage) -> tuple[ToolCall, ...]:
    calls: list[ToolCall] = []
    for block in message.blocks:
        if isinstance(block, ToolCallBlock):
            calls.append(
                ToolCall(
                    id=block.tool_call_id or "",
                    name=block.tool_name,
                    arguments=_arguments(block.tool_kwargs),
                )
            )
    from_blocks = {c.id for c in calls if c.id}
    for raw in message.additional_kwargs.get("tool_calls") or ():
        call = _kwargs_call(raw)
        if call is not None and not (call.id and call.id in from_blocks):  # carried both ways: one call
            calls.append(call)
    return tuple(calls)


def to_core_message(message: ChatMessage, *, where: str = "message") -> Message:
    """Convert one LlamaIndex ``ChatMessage``.

    Raises:
        InvalidMessageError: The role or a content block is not supported, or
            ``additional_kwargs["name"]`` is not a string (named ``<where>.additional_kwargs.name``).
    """
    if not isinstance(message, ChatMessage):
        raise InvalidMessageError(where, f"expected a LlamaIndex ChatMessage, got {type(message).__name__}")
    role = _ROLES.get(str(message.role.value))
    if role is None:
        raise InvalidMessageError(f"{where}.role", f"unsupported role {message.role!r}")
    parts: list[Part] = []
    for i, block in enumerate(message.blocks):
        if isinstance(block, TextBlock):
            parts.append(TextPart(text=block.text))
        elif isinstance(block, ImageBlock):
            parts.append(_image(block))
        elif isinstance(block, ToolCallBlock) or block.block_type == "cache":
            continue  # tool calls are read below; a CachePoint is a prompt-cache marker, no content
        else:
            raise InvalidMessageError(
                f"{where}.blocks[{i}]",
                f"unsupported block {type(block).__name__}",
                fix="use text or image blocks",
            )
    content: str | tuple[Part, ...] = (
        parts[0].text if len(parts) == 1 and isinstance(parts[0], TextPart) else tuple(parts)
    )
    if not parts:
        content = ""
    kwargs = message.additional_kwargs
    name = kwargs.get("name")
    if name is not None and not isinstance(name, str):
        raise InvalidMessageError(
            f"{where}.additional_kwargs.name",
            f"must be a string (the participant's name the provider is sent), got {type(name).__name__}",
            value=name,
            fix='pass additional_kwargs={"name": str(...)}, or leave the name out',
        )
    try:
        return Message(
            role=role,  # type: ignore[arg-type]
            content=content,
            name=name,
            tool_calls=_tool_calls(message) if role == "assistant" else (),
            tool_call_id=kwargs.get("tool_call_id") if role == "tool" else None,
        )
    except InvalidMessageError as e:
        raise InvalidMessageError(
            e.field.replace("message", where, 1), e.problem, value=e.value, fix=e.fix
        ) from e


def check_messages(messages: object) -> Sequence[ChatMessage]:
    """``messages`` as the list (or tuple) of LlamaIndex ``ChatMessage`` a chat call takes.

    Raises:
        InvalidMessageError: ``messages`` is not a list, or an item is not a ``ChatMessage``
            (named ``messages[i]``).
    """
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise InvalidMessageError(
            "messages",
            f"must be a list of LlamaIndex ChatMessage, got {type(messages).__name__}",
            fix='pass [ChatMessage(role="user", content=...)]',
        )
    for i, message in enumerate(messages):
        if not isinstance(message, ChatMessage):
            raise InvalidMessageError(
                f"messages[{i}]", f"expected a LlamaIndex ChatMessage, got {type(message).__name__}"
            )
    return messages


def check_prompt(prompt: object) -> str:
    """``prompt`` as the string a completion call takes.

    Raises:
        InvalidInputError: ``prompt`` is not a string.
    """
    if not isinstance(prompt, str):
        raise InvalidInputError("prompt", f"must be a string, got {type(prompt).__name__}", value=prompt)
    return prompt


def to_core_messages(messages: Sequence[ChatMessage]) -> list[Message]:
    """Convert LlamaIndex chat messages, naming ``messages[i]`` in errors.

    Raises:
        InvalidMessageError: ``messages`` is not a list, or a message cannot be converted.
    """
    return [to_core_message(m, where=f"messages[{i}]") for i, m in enumerate(check_messages(messages))]


def to_core_request(messages: Sequence[ChatMessage]) -> list[Message]:
    """The messages of a model request, converted for counting whatever blocks they carry:
    :func:`to_countable_message` for each.

    Raises:
        InvalidMessageError: ``messages`` is not a list, or an item is not a LlamaIndex ``ChatMessage``.
    """
    return [to_countable_message(m, where=f"messages[{i}]") for i, m in enumerate(check_messages(messages))]


def to_countable_message(message: ChatMessage, *, where: str = "message") -> Message:
    """One message converted for counting, whatever blocks it carries.

    Like :func:`to_core_message`, except that what the core cannot represent (a document, audio
    or video block, thinking, a message the core refuses) does not raise: the message becomes a
    *stand-in*, each such block replaced by the text of the core's estimate
    (:func:`~tokenbudget_core.counting.estimate_block`) and its files' estimate kept in
    ``Message.file_tokens``, which fitting, memory, routing and the budget callbacks add
    (:func:`~tokenbudget_core.counting.add_file_tokens`), flagged inexact. A message of a role
    the core does not know stands in whole, as a user message.

    Raises:
        InvalidMessageError: ``message`` is not a LlamaIndex ``ChatMessage``, or is malformed (a
            tool result without the id of its call, a name that is not a string).
    """
    try:
        return to_core_message(message, where=where)
    except InvalidMessageError:
        if not isinstance(message, ChatMessage):
            raise
    blocks: list[Any] = []
    found: list[int] = []
    for block in message.blocks:
        try:
            to_core_message(message.model_copy(update={"blocks": [block]}))
            blocks.append(block)
        except InvalidMessageError:
            estimate = estimate_block(block.model_dump())
            found.append(estimate.file_tokens)
            blocks.append(TextBlock(text=estimate.text))
    try:
        converted = to_core_message(message.model_copy(update={"blocks": blocks}), where=where)
    except InvalidMessageError as e:
        if e.field != f"{where}.role":
            raise  # only content, or a role unknown here, stands in: not a malformed message
        estimate = estimate_block(message.model_dump())
        return Message(role="user", content=estimate.text, file_tokens=estimate.file_tokens)
    return dataclasses.replace(converted, file_tokens=sum(found))
