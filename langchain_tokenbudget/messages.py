"""Translate LangChain messages into tokenbudget core messages.

:func:`to_core_messages` refuses what the core cannot represent (``InvalidMessageError``);
:func:`to_countable_message` / :func:`to_core_request`, for counting and fitting messages that
are going out anyway, make a *stand-in* of such a message instead: the core's estimate of it,
its files' tokens in ``Message.file_tokens``.

Messages are translated as the providers' LangChain integrations send them. An AI message's calls
are its ``tool_calls`` (arguments as JSON, non-ASCII unescaped), then its ``invalid_tool_calls``
(the malformed arguments as written: langchain-openai sends both), then any call content block
no tool call stands for (Anthropic's ``tool_use``, the Responses API's ``function_call`` and
``custom_tool_call``: each call is sent once), or else a legacy ``function_call``.
A ``ToolMessage``'s name is left out (langchain-openai does not send it). A user message carrying
Anthropic ``tool_result`` blocks is the core's ``tool`` message answering the first of them, so
the core keeps it with the call it answers.
"""

from __future__ import annotations

import copy
import functools
import json
import marshal
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, cast

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from tokenbudget_core.counting import estimate_block
from tokenbudget_core.errors import InvalidMessageError
from tokenbudget_core.messages import ImagePart, Message, Part, TextPart, ToolCall, to_part

__all__ = ["to_core_message", "to_core_messages", "to_core_request", "to_countable_message"]

_ROLE_BY_TYPE = {
    "system": "system",
    "human": "user",
    "ai": "assistant",
    "tool": "tool",
    "function": "function",
}
_CORE_ROLES = frozenset({*_ROLE_BY_TYPE.values(), "developer"})
_CALL_BLOCKS = frozenset({"tool_use", "function_call", "custom_tool_call"})
"""Content blocks that are calls, read by :func:`_calls`: Anthropic's ``tool_use``, and the
OpenAI Responses API's ``function_call`` / ``custom_tool_call`` (langchain-openai's
``output_version="responses/v1"`` keeps them in the content beside ``tool_calls``)."""
_SKIPPED = frozenset(
    {"tool_call", "server_tool_use", "reasoning", "thinking", "redacted_thinking", *_CALL_BLOCKS}
)


def _part(block: object, where: str) -> Part | None:
    """One content block as a core part (``None``: not input the model reads again).

    Raises:
        InvalidMessageError: The block is malformed or of a type the core cannot represent.
    """
    if isinstance(block, str):
        return TextPart(text=block)
    if not isinstance(block, dict):
        raise InvalidMessageError(where, "must be a string or a content block dict")
    kind = block.get("type")
    if kind in ("text", "image_url"):  # OpenAI-format blocks: the core parses them
        return to_part(block, where=where)
    if kind == "image":  # LangChain standard content block (v1 or v0), or Anthropic's own
        url = _image_url(block)
        if url is None:
            raise InvalidMessageError(where, "an image block needs 'url' or 'base64'")
        return ImagePart(url=url)
    if kind in _SKIPPED:
        return None  # tool calls are read by _calls; reasoning is not re-sent as input
    raise InvalidMessageError(
        f"{where}.type",
        f"unsupported content block type {kind!r}",
        fix="supported: 'text', 'image_url', 'image'",
    )


def _image_url(block: dict[str, Any]) -> str | None:
    """The URL (or ``data:`` URL) of an image block, whichever way it names its image:
    LangChain v1 (``url`` / ``base64``), v0 (``source_type`` with ``url`` / ``data``) or
    Anthropic's own (``source: {type: base64 | url, ...}``). ``None``: none of these (a file id)."""
    source = block.get("source")
    if isinstance(source, dict):  # Anthropic: {type: base64, media_type, data} or {type: url, url}
        block = {
            "url": source.get("url"),
            "base64": source.get("data"),
            "mime_type": source.get("media_type"),
        }
    elif block.get("source_type") == "base64":  # LangChain v0
        block = {"base64": block.get("data"), "mime_type": block.get("mime_type")}
    if block.get("url"):
        return str(block["url"])
    if block.get("base64"):
        return f"data:{block.get('mime_type') or 'image/png'};base64,{block['base64']}"
    return None


def _parts(content: str | list[Any], where: str, estimates: list[int] | None) -> str | tuple[Part, ...]:
    """The message's content as core parts; with ``estimates``, a block the core cannot represent
    becomes the text :func:`~tokenbudget_core.counting.estimate_block` gives, its files' estimate
    appended to ``estimates``."""
    if isinstance(content, str):
        return content
    parts = (_block(block, f"{where}.content[{i}]", estimates) for i, block in enumerate(content))
    return tuple(p for p in parts if p is not None)


def _block(block: object, where: str, estimates: list[int] | None) -> Part | None:
    """One content block as :func:`_part` reads it, or (with ``estimates``) its estimate's text."""
    try:
        return _part(block, where)
    except InvalidMessageError:
        if estimates is None:
            raise
        return _estimated(block, estimates)


def _is_result(block: object) -> bool:
    return isinstance(block, dict) and block.get("type") == "tool_result"


def _result_parts(
    content: list[Any], where: str, estimates: list[int] | None
) -> tuple[str, tuple[Part, ...]]:
    """A user message's content carrying Anthropic ``tool_result`` blocks: the id of the call the
    first answers, and the parts of every result (their text and images) and of the other blocks.

    Raises:
        InvalidMessageError: A ``tool_result`` block lacks the id of its call or has content
            that is neither text nor a list of blocks.
    """
    first = ""
    parts: list[Part | None] = []
    for i, block in enumerate(content):
        w = f"{where}.content[{i}]"
        if not _is_result(block):
            parts.append(_block(block, w, estimates))
            continue
        call_id = block.get("tool_use_id")
        if not isinstance(call_id, str) or not call_id:
            raise InvalidMessageError(
                f"{w}.tool_use_id",
                "a tool_result block needs the id of the tool_use block it answers",
                fix="set 'tool_use_id' to the id of the call (the assistant's tool_calls[j]['id'])",
            )
        first = first or call_id
        inner = block.get("content")
        if isinstance(inner, str):
            parts.append(TextPart(text=inner))
        elif isinstance(inner, list):
            parts.extend(_block(b, f"{w}.content[{j}]", estimates) for j, b in enumerate(inner))
        elif inner is not None:
            raise InvalidMessageError(
                f"{w}.content", f"must be a string or a list of content blocks, got {type(inner).__name__}"
            )
    return first, tuple(p for p in parts if p is not None)


def _calls(message: AIMessage, where: str) -> tuple[ToolCall, ...]:
    """The calls of an AI message as the providers' integrations send them (see the module doc).

    A call content block (:data:`_CALL_BLOCKS`) whose id a tool call already carries is that call,
    sent once (langchain-openai skips the ``tool_calls`` entry, langchain-anthropic the block).

    Raises:
        InvalidMessageError: A call content block has no string id, or a call's arguments are
            not JSON-serialisable (no provider integration could send them).
    """
    calls = [
        ToolCall(
            id=c.get("id") or "",
            name=c["name"],
            arguments=_json(c.get("args", {}), f"{where}.tool_calls[{i}].args"),
        )
        for i, c in enumerate(message.tool_calls)
    ]
    calls += [
        ToolCall(id=c.get("id") or "", name=c.get("name") or "", arguments=c.get("args") or "")
        for c in message.invalid_tool_calls
    ]
    if isinstance(message.content, list):
        known = {c.id for c in calls}
        for i, block in enumerate(message.content):
            if not isinstance(block, dict) or block.get("type") not in _CALL_BLOCKS:
                continue
            call = _block_call(block, f"{where}.content[{i}]")
            if call.id not in known:
                calls.append(call)
    legacy = message.additional_kwargs.get("function_call")
    if not calls and isinstance(legacy, Mapping):
        written = legacy.get("arguments")
        calls.append(
            ToolCall(
                id="",
                name=str(legacy.get("name") or ""),
                arguments=written if isinstance(written, str) else "",
            )
        )
    return tuple(calls)


def _block_call(block: dict[str, Any], where: str) -> ToolCall:
    """A call content block as the call it stands for: ``tool_use`` (``id``, ``input`` object),
    ``function_call`` (``call_id``, ``arguments`` as written) or ``custom_tool_call`` (``call_id``,
    free-form ``input``)."""
    kind = block["type"]
    key = "id" if kind == "tool_use" else "call_id"
    call_id = block.get(key)
    if not isinstance(call_id, str):
        raise InvalidMessageError(f"{where}.{key}", f"a {kind} block needs the string id of its call")
    name = str(block.get("name") or "")
    if kind == "tool_use":
        return ToolCall(id=call_id, name=name, arguments=_json(block.get("input") or {}, f"{where}.input"))
    written = block.get("arguments" if kind == "function_call" else "input")
    return ToolCall(id=call_id, name=name, arguments=written if isinstance(written, str) else "")


def _json(arguments: object, where: str) -> str:
    """A call's arguments as the integrations send them: JSON, non-ASCII unescaped.

    Raises:
        InvalidMessageError: They are not JSON-serialisable (a ``date``, ``Decimal``, ``set``...).
    """
    try:
        return json.dumps(arguments, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError) as e:
        raise InvalidMessageError(
            where,
            f"must be JSON-serialisable: {e}",
            fix="convert the values to JSON types (str, number, bool, None, list, dict) first",
        ) from None


def _estimated(data: object, estimates: list[int]) -> TextPart:
    estimate = estimate_block(data)
    estimates.append(estimate.file_tokens)
    return TextPart(text=estimate.text)


def to_core_message(message: BaseMessage, *, where: str = "message") -> Message:
    """Convert one LangChain message.

    Raises:
        InvalidMessageError: The message type or a content block is not supported.
    """
    return _convert(message, where, None)


def _convert(message: BaseMessage, where: str, estimates: list[int] | None) -> Message:
    if not isinstance(message, BaseMessage):
        raise InvalidMessageError(where, f"expected a LangChain BaseMessage, got {type(message).__name__}")
    role = message.role if isinstance(message, ChatMessage) else _ROLE_BY_TYPE.get(message.type)
    if role is None:
        raise InvalidMessageError(f"{where}.type", f"unsupported message type {message.type!r}")
    if role not in _CORE_ROLES:
        raise InvalidMessageError(f"{where}.type", f"a chat message of unsupported role {role!r}")
    calls = _calls(message, where) if isinstance(message, AIMessage) else ()
    tool_call_id = message.tool_call_id if isinstance(message, ToolMessage) else None
    content: str | tuple[Part, ...]
    if role == "user" and isinstance(message.content, list) and any(map(_is_result, message.content)):
        role = "tool"
        tool_call_id, content = _result_parts(message.content, where, estimates)
    else:
        content = _parts(message.content, where, estimates)
    return Message(
        role=role,  # type: ignore[arg-type]
        content=content,
        name=None if isinstance(message, ToolMessage) else message.name,
        tool_calls=calls,
        tool_call_id=tool_call_id,
        file_tokens=sum(estimates) if estimates else None,
    )


def to_countable_message(message: BaseMessage, *, where: str = "message") -> Message:
    """One message converted for counting, whatever blocks it carries.

    Like :func:`to_core_message`, except that what the core cannot represent (a file or PDF
    block, audio, a provider's server-tool result, a message of an unknown type) does not raise:
    the message becomes a *stand-in*, the core's rule
    (:func:`~tokenbudget_core.counting.estimate_block`) giving the text in the block's place and
    the estimate of its files in ``Message.file_tokens``, which fitting, memory, routing and the
    budget adapters add (:func:`~tokenbudget_core.counting.add_file_tokens`), flagged inexact.

    Raises:
        InvalidMessageError: ``message`` is not a LangChain message, or is malformed (a tool result
            without the id of its call).
    """
    estimates: list[int] = []
    try:
        return _convert(message, where, estimates)
    except InvalidMessageError as e:
        if not isinstance(message, BaseMessage) or e.field != f"{where}.type":
            raise  # only content, or a message type unknown here, stands in: not a malformed message
    estimates.clear()
    whole = {
        "type": message.type,
        "content": message.content,
        "tool_calls": getattr(message, "tool_calls", None),
    }
    text = _estimated(whole, estimates)
    return Message(role="user", content=(text,), file_tokens=sum(estimates))


def to_core_request(messages: Sequence[BaseMessage]) -> list[Message]:
    """The messages of a model request, converted for counting whatever blocks they carry:
    :func:`to_countable_message` for each, in one pass. Plain messages are reused from the cache
    :func:`to_core_messages` keeps; any other message object (a tool call, a tool result, one
    with content blocks) from a cache of the objects converted lately, checked against a
    type-strict image of the fields its conversion read (a message edited in place, even inside
    a content block, is converted again, also when the edit is one ``==`` misses: ``1`` to
    ``1.0`` or ``True``, reordered keys): an agent sends its whole transcript on every model call, and the
    budget and context middlewares read it on each.

    Raises:
        InvalidMessageError: An item is not a LangChain message.
    """
    _check_list(messages)
    return [plain_message(m) or _remembered(m, i) for i, m in enumerate(messages)]


def _read_fields(m: BaseMessage) -> tuple[object, ...]:
    """Every field :func:`to_countable_message` reads of ``m`` (from the model's ``__dict__``:
    ``getattr`` of a field a message class lacks costs more than converting a plain message)."""
    d = m.__dict__
    kwargs = d.get("additional_kwargs")
    return (
        type(m),
        d.get("type"),
        d.get("role"),
        d.get("content"),
        d.get("name"),
        d.get("tool_calls"),
        d.get("invalid_tool_calls"),
        kwargs.get("function_call") if type(kwargs) is dict else kwargs,
        d.get("tool_call_id"),
    )


_MEMO_MAX = 16_384
_memo: dict[int, tuple[weakref.ref[BaseMessage], tuple[object, ...], Message]] = {}
"""``id(message) -> (a weak reference to it, a type-strict image of its fields (:func:`_image`),
its conversion)``."""


def _forget(ref: weakref.ref[BaseMessage], key: int) -> None:
    entry = _memo.get(key)
    if entry is not None and entry[0] is ref:
        _memo.pop(key, None)


def _image(fields: tuple[object, ...]) -> tuple[object, ...]:
    """What :func:`_unchanged` compares the fields with later: equal only while the conversion
    would be the same, so ``1``, ``1.0`` and ``True`` (which ``==`` calls equal and ``json.dumps``
    writes ``1``, ``1.0``, ``true``) and a dict's key order count as changes. The message class;
    the fields that are ``str`` or ``None`` as they are (immutable: kept, not copied, so a long
    text is not held twice); the others (content blocks, tool calls) as their ``marshal`` bytes
    (format 2: no references, so the bytes do not depend on which objects are shared or
    interned; exact builtin types only, each tagged with its type, dicts in their order),
    compared in C; when they hold other objects (a ``str`` or ``dict`` subclass, an enum, a
    model) a deep copy instead, compared with :func:`_same`.

    Raises:
        Exception: The fields cannot be copied (the message is then not remembered).
    """
    flat, nested = _split(fields)
    try:
        return (fields[0], flat, marshal.dumps(cast("Any", nested), 2))
    except ValueError:  # an object marshal does not take, or nested too deep
        return (fields[0], flat, None, copy.deepcopy(nested))


_NESTED = object()
"""Stands in the flat part of an image for a field kept in its nested part."""


def _split(fields: tuple[object, ...]) -> tuple[tuple[object, ...], tuple[object, ...]]:
    flat = tuple(v if v is None or type(v) is str else _NESTED for v in fields[1:])
    return flat, tuple(v for v in fields[1:] if not (v is None or type(v) is str))


def _unchanged(fields: tuple[object, ...], image: tuple[object, ...]) -> bool:
    """Whether ``fields`` still convert as when ``image`` (:func:`_image`) was taken."""
    if fields[0] is not image[0]:  # the message class
        return False
    flat, nested = _split(fields)
    if flat != image[1]:
        return False
    if image[2] is not None:
        try:
            return marshal.dumps(cast("Any", nested), 2) == image[2]
        except ValueError:  # an object marshal does not take was put in since
            return False
    return _same(nested, image[3])


def _same(a: object, b: object) -> bool:
    """``a == b`` that also tells apart what ``==`` calls equal but the conversion writes
    differently (``json.dumps`` of tool-call arguments, block fields): ``1``, ``1.0`` and ``True``
    (types compared, recursively), and dicts whose keys come in another order."""
    kind = type(a)
    if kind is not type(b):
        return False
    if kind is str:
        return a == b
    if kind is dict:
        x, y = cast("dict[object, object]", a), cast("dict[object, object]", b)
        if len(x) != len(y):
            return False
        for (kx, vx), (ky, vy) in zip(x.items(), y.items(), strict=True):
            if not (_same(kx, ky) and _same(vx, vy)):
                return False
        return True
    if kind is list or kind is tuple:
        u, v = cast("Sequence[object]", a), cast("Sequence[object]", b)
        return len(u) == len(v) and all(map(_same, u, v))
    return a == b


def same_message(a: BaseMessage, b: BaseMessage) -> bool:
    """Whether ``a`` and ``b`` (say a message and a backing store's copy of it) convert the same:
    every field :func:`to_countable_message` reads is equal, ``1`` / ``1.0`` / ``True`` and key
    order told apart."""
    return _same(_read_fields(a), _read_fields(b))


def _remembered(m: BaseMessage, i: int) -> Message:
    """:func:`to_countable_message` of ``m``, from the memo when its fields are unchanged."""
    key = id(m)
    entry = _memo.get(key)
    if entry is not None and entry[0]() is m:
        try:
            if _unchanged(_read_fields(m), entry[1]):
                return entry[2]
        except Exception:  # noqa: BLE001 - a field whose comparison fails: convert afresh
            pass
    converted = to_countable_message(m, where=f"messages[{i}]")
    try:
        image = _image(_read_fields(m))
        ref = weakref.ref(m, functools.partial(_forget, key=key))
    except Exception:  # noqa: BLE001 - fields that cannot be copied (or no weak reference): not kept
        return converted
    if len(_memo) >= _MEMO_MAX:
        _memo.clear()
    _memo[key] = (ref, image, converted)
    return converted


def to_core_messages(messages: Sequence[BaseMessage]) -> list[Message]:
    """Convert LangChain messages, naming ``messages[i]`` in errors.

    Plain-text system, human and AI messages (no tool calls) are converted once and then reused
    (core messages are immutable), so a growing history is not translated again on every call.
    """
    _check_list(messages)
    return [plain_message(m) or to_core_message(m, where=f"messages[{i}]") for i, m in enumerate(messages)]


def _check_list(messages: object) -> None:
    """Raises InvalidMessageError unless ``messages`` is a list (or tuple) of items to read."""
    if not isinstance(messages, list | tuple):
        raise InvalidMessageError(
            "messages", f"must be a list of LangChain messages, got {type(messages).__name__}"
        )


def check_messages(messages: object) -> Sequence[BaseMessage]:
    """``messages`` if it is a list (or tuple) of LangChain messages.

    Raises:
        InvalidMessageError: Not a list, or an item is not a LangChain message (``messages[i]``).
    """
    _check_list(messages)
    for i, m in enumerate(cast("Sequence[object]", messages)):
        if not isinstance(m, BaseMessage):
            raise InvalidMessageError(
                f"messages[{i}]", f"expected a LangChain message, got {type(m).__name__}"
            )
    return cast("Sequence[BaseMessage]", messages)


def _has_calls(m: AIMessage) -> bool:
    return bool(m.tool_calls or m.invalid_tool_calls or "function_call" in m.additional_kwargs)


def plain_message(m: object) -> Message | None:
    """The conversion of a plain-text system, human or AI message (no tool calls), converted once
    and kept; ``None`` for any other item (convert it with :func:`to_countable_message`)."""
    cls = type(m)
    if cls not in _PLAIN or type(content := m.content) is not str or (cls is AIMessage and _has_calls(m)):  # type: ignore[attr-defined, arg-type]
        return None
    key = (cls, content, m.name)  # type: ignore[attr-defined]
    found = _converted.get(key)
    if found is None:
        found = to_core_message(m)  # type: ignore[arg-type]
        if len(_converted) >= _CONVERTED_MAX:
            _converted.clear()
        _converted[key] = found
    return found


_PLAIN: frozenset[type[BaseMessage]] = frozenset({SystemMessage, HumanMessage, AIMessage})
"""Message classes whose conversion depends only on their type, text and name."""
_CONVERTED_MAX = 4_096
_converted: dict[tuple[type[BaseMessage], str, str | None], Message] = {}
