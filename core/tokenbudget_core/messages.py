"""The core's chat message type and the conversion from OpenAI-style dicts.

Every counter, trimmer and adapter works on :class:`Message`. Plain dicts in the
OpenAI Chat Completions shape are accepted wherever messages are, and converted
by :func:`to_message`, which validates them and names the offending field.
"""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, cast, get_args

from .errors import InvalidMessageError

__all__ = [
    "ImagePart",
    "Message",
    "MessageLike",
    "Part",
    "Role",
    "TextPart",
    "ToolCall",
    "to_message",
    "to_messages",
    "to_openai_dict",
    "to_part",
]

Role: TypeAlias = Literal["system", "developer", "user", "assistant", "tool", "function"]
_ROLES: frozenset[str] = frozenset(get_args(Role))
ImageDetail: TypeAlias = Literal["auto", "low", "high"]
_DETAILS: frozenset[str] = frozenset(get_args(ImageDetail))


@dataclass(frozen=True, kw_only=True, slots=True)
class TextPart:
    """A text part of a multi-part message."""

    text: str
    """The text."""

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise InvalidMessageError("text_part.text", "must be a string", value=type(self.text).__name__)


@dataclass(frozen=True, kw_only=True, slots=True)
class ImagePart:
    """An image part of a multi-part message."""

    url: str
    """An ``https://`` URL or a ``data:image/...;base64,`` URL."""
    detail: ImageDetail = "auto"
    """OpenAI's detail level: ``low`` is a flat fee, ``high``/``auto`` are priced by tiles."""
    width: int | None = None
    """Pixel width, if known. Read from the data URL's header when absent."""
    height: int | None = None
    """Pixel height, if known. Read from the data URL's header when absent."""

    def __post_init__(self) -> None:
        if not isinstance(self.url, str):
            raise InvalidMessageError(
                "image.url",
                "must be a URL string (https:// or data:image/...)",
                value=type(self.url).__name__,
            )
        if not isinstance(self.detail, str) or self.detail not in _DETAILS:  # (a dict is unhashable)
            raise InvalidMessageError("image.detail", f"must be one of {sorted(_DETAILS)}", value=self.detail)
        for name in ("width", "height"):
            size = getattr(self, name)
            if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
                raise InvalidMessageError(
                    f"image.{name}", "must be a positive number of pixels (or None: unknown)", value=size
                )


Part: TypeAlias = TextPart | ImagePart


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolCall:
    """A tool (function) call made by the assistant."""

    id: str
    """The call id that the matching tool result refers to."""
    name: str
    """The tool's name."""
    arguments: str = ""
    """The arguments as the model wrote them (a JSON string)."""

    def __post_init__(self) -> None:
        for name in ("id", "name", "arguments"):
            if not isinstance(getattr(self, name), str):
                raise InvalidMessageError(
                    f"tool_call.{name}", "must be a string", value=type(getattr(self, name)).__name__
                )


@dataclass(frozen=True, kw_only=True, eq=True)
class Message:
    """One chat message, framework-neutral and immutable.

    Messages are hashable; the hash is computed once, so a message can key the
    per-content count cache cheaply however often the history is re-counted.

    Example:
        >>> Message(role="user", content="Hello")
        Message(role='user', content='Hello', name=None, tool_calls=(), tool_call_id=None, file_tokens=None)
    """

    role: Role
    """``system``, ``developer``, ``user``, ``assistant``, ``tool`` or ``function``."""
    content: str | tuple[Part, ...] = ""
    """Plain text, or a tuple of text and image parts."""
    name: str | None = None
    """Optional participant name (costs one extra token on OpenAI models)."""
    tool_calls: tuple[ToolCall, ...] = ()
    """Tool calls made by an assistant message."""
    tool_call_id: str | None = None
    """For ``tool`` messages: the id of the call this result answers."""
    file_tokens: int | None = None
    """Set by adapters on a *stand-in*: a message whose content the core cannot represent (a PDF
    or file block, audio, a server-tool result) converted with
    :func:`~tokenbudget_core.counting.estimate_block`'s text in its place. The estimated tokens
    of its files, which that text leaves out; fitting, memory, routing and the budget adapters
    add them (:func:`~tokenbudget_core.counting.add_file_tokens`) and flag the count as an
    estimate. ``None``: the content is the message itself."""
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        files = self.file_tokens
        if isinstance(files, numbers.Integral) and not isinstance(files, bool) and type(files) is not int:
            object.__setattr__(self, "file_tokens", int(files))  # numpy integers, TokenCount
        _validate(self)
        object.__setattr__(
            self,
            "_hash",
            hash((self.role, self.content, self.name, self.tool_calls, self.tool_call_id, self.file_tokens)),
        )

    def __hash__(self) -> int:
        return self._hash

    @property
    def text(self) -> str:
        """The message's text parts joined (images left out)."""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, TextPart))


MessageLike: TypeAlias = Message | Mapping[str, Any]


def _validate(m: Message, where: str = "message") -> None:
    if not isinstance(m.role, str) or m.role not in _ROLES:
        raise InvalidMessageError(
            f"{where}.role", f"unknown role {m.role!r}", value=m.role, fix=f"use one of {sorted(_ROLES)}"
        )
    if isinstance(m.content, tuple):
        for i, part in enumerate(m.content):
            if not isinstance(part, TextPart | ImagePart):
                raise InvalidMessageError(
                    f"{where}.content[{i}]",
                    f"expected TextPart or ImagePart, got {type(part).__name__}",
                    value=part,
                )
    elif not isinstance(m.content, str):
        raise InvalidMessageError(
            f"{where}.content",
            f"content must be a string or a tuple of parts, got {type(m.content).__name__}",
            value=m.content,
            fix="convert it to text first",
        )
    for name in ("name", "tool_call_id"):
        value = getattr(m, name)
        if value is not None and not isinstance(value, str):
            raise InvalidMessageError(
                f"{where}.{name}", "must be a string (or None)", value=type(value).__name__
            )
    if not isinstance(m.tool_calls, tuple) or not all(isinstance(c, ToolCall) for c in m.tool_calls):
        raise InvalidMessageError(
            f"{where}.tool_calls", "must be a tuple of ToolCall", value=type(m.tool_calls).__name__
        )
    files = m.file_tokens
    if files is not None and (isinstance(files, bool) or not isinstance(files, int) or files < 0):
        raise InvalidMessageError(
            f"{where}.file_tokens", "must be a whole number of tokens, 0 or more (or None)", value=files
        )
    if m.role == "tool" and not m.tool_call_id:
        raise InvalidMessageError(
            f"{where}.tool_call_id", "a tool message needs the id of the call it answers", value=None
        )


def _str_field(d: Mapping[str, Any], key: str, where: str, *, required: bool) -> str | None:
    value = d.get(key)
    if value is None:
        if required:
            raise InvalidMessageError(f"{where}.{key}", "is missing", fix=f"add a string {key!r}")
        return None
    if not isinstance(value, str):
        raise InvalidMessageError(
            f"{where}.{key}", f"must be a string, got {type(value).__name__}", value=value
        )
    return value


def _int_field(d: Mapping[str, Any], key: str, where: str) -> int | None:
    value = d.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidMessageError(f"{where}.{key}", "must be a positive integer", value=value)
    return value


def to_part(raw: object, *, where: str = "part") -> Part:
    """Convert an OpenAI-style content part (``text``, ``image_url``, ``refusal``) or a string.

    Raises:
        InvalidMessageError: The part is malformed or of an unknown type.
    """
    if isinstance(raw, TextPart | ImagePart):
        return raw
    if isinstance(raw, str):
        return TextPart(text=raw)
    if not isinstance(raw, Mapping):
        raise InvalidMessageError(
            where, f"a content part must be a dict, got {type(raw).__name__}", value=raw
        )
    kind = raw.get("type")
    if kind in ("text", "input_text", "output_text"):
        return TextPart(text=_str_field(raw, "text", where, required=True) or "")
    if kind == "refusal":
        return TextPart(text=_str_field(raw, "refusal", where, required=True) or "")
    if kind == "image_url":
        image = raw.get("image_url")
        if isinstance(image, str):
            image = {"url": image}
        if not isinstance(image, Mapping):
            raise InvalidMessageError(f"{where}.image_url", "must be a dict with a 'url'", value=image)
        detail = image.get("detail", "auto")
        if detail not in _DETAILS:
            raise InvalidMessageError(
                f"{where}.image_url.detail",
                f"unknown detail {detail!r}",
                value=detail,
                fix="use 'auto', 'low' or 'high'",
            )
        return ImagePart(
            url=_str_field(image, "url", f"{where}.image_url", required=True) or "",
            detail=detail,
            width=_int_field(image, "width", f"{where}.image_url"),
            height=_int_field(image, "height", f"{where}.image_url"),
        )
    raise InvalidMessageError(
        f"{where}.type",
        f"unknown content part type {kind!r}",
        value=kind,
        fix="supported part types are 'text', 'image_url' and 'refusal'",
    )


def _tool_calls(raw: object, where: str) -> tuple[ToolCall, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise InvalidMessageError(where, "must be a list of tool calls", value=raw)
    calls: list[ToolCall] = []
    for i, call in enumerate(raw):
        w = f"{where}[{i}]"
        if isinstance(call, ToolCall):
            calls.append(call)
            continue
        if not isinstance(call, Mapping):
            raise InvalidMessageError(w, "a tool call must be a dict", value=call)
        fn = call.get("function")
        if not isinstance(fn, Mapping):
            raise InvalidMessageError(f"{w}.function", "must be a dict with 'name' and 'arguments'", value=fn)
        calls.append(
            ToolCall(
                id=_str_field(call, "id", w, required=True) or "",
                name=_str_field(fn, "name", f"{w}.function", required=True) or "",
                arguments=_str_field(fn, "arguments", f"{w}.function", required=False) or "",
            )
        )
    return tuple(calls)


_NEEDS_CONTENT = frozenset({"system", "developer", "user", "tool"})
"""Roles whose message is its content: without one it is counted as its framing only. An
assistant's may be ``None`` (its ``tool_calls``, ``function_call`` or ``refusal`` say it); a
legacy ``function`` result's too."""

_TEXT_KEYS = ("text", "message", "msg", "parts", "blocks")
"""Keys a message's text is put under by mistake (or by another API's shape: Gemini's ``parts``,
a LlamaIndex ``ChatMessage`` dump's ``blocks``) that are not read: with no ``content``, the text
would be counted as nothing."""


def _misplaced_text(raw: Mapping[str, Any]) -> str | None:
    """The key of ``raw`` that seems to hold the text ``content`` should: a known stray key
    (``text``, ``message``...) or a misspelling of ``content`` (``contents``, ``Content``), holding
    something; ``None`` when there is none."""
    for key, value in raw.items():
        if not isinstance(key, str) or key == "content" or value is None:
            continue
        if isinstance(value, str | list | tuple) and not value:  # nothing there either
            continue
        lowered = key.lower()
        if lowered in _TEXT_KEYS:
            return key
        # a misspelt ``content`` holds text (a string or parts), and is no key a provider's message
        # carries beside it (Azure's "On Your Data" ``context``, a dict, reads much like it)
        if (
            isinstance(value, str | list | tuple)
            and lowered not in _MESSAGE_KEYS
            and difflib.get_close_matches(lowered, ["content"], n=1, cutoff=0.8)
        ):
            return key
    return None


_MESSAGE_KEYS = frozenset(
    {
        "context", "contexts", "citations", "annotations", "refusal", "reasoning_content", "audio",
        "tool_calls", "tool_call_id", "function_call", "name", "role", "id", "type", "metadata",
        "cache_control", "additional_kwargs", "response_metadata",
    }
)  # fmt: skip
"""Keys provider, framework and proxy message shapes carry beside ``content``: never taken for
a misspelling of it."""


def _check_missing_content(raw: Mapping[str, Any], role: str, where: str) -> None:
    """Refuse a message with no ``content`` whose text is elsewhere, or whose role has no message
    without one: counted, it would be its framing only, flagged exact (a silently wrong count).

    Raises:
        InvalidMessageError: Naming ``<where>.content``.
    """
    stray = _misplaced_text(raw)
    if stray is not None:
        raise InvalidMessageError(
            f"{where}.content",
            f"is missing; the message's text seems to be under {stray!r}, which is not read "
            "(it would be counted as no text at all)",
            value=sorted(str(k) for k in raw),
            fix=f"rename {stray!r} to 'content' (a string or a list of parts)",
        )
    if role in _NEEDS_CONTENT:
        raise InvalidMessageError(
            f"{where}.content",
            f"is missing: a {role} message without content would be counted as its framing only",
            value=sorted(str(k) for k in raw),
            fix="add its text as 'content' (a string or a list of parts; '' for an empty message)",
        )


def _with_refusal(content: str | tuple[Part, ...], refusal: object, where: str) -> str | tuple[Part, ...]:
    """``content`` with an assistant's message-level ``refusal`` (the shape OpenAI's API returns,
    and its SDK's ``ChatCompletionMessage.model_dump()`` gives: ``content`` ``None``, the refusal's
    text beside it), counted as the same refusal sent as a content part is.

    Raises:
        InvalidMessageError: ``refusal`` is neither a string nor ``None``.
    """
    if refusal is None or refusal == "":
        return content
    if not isinstance(refusal, str):
        raise InvalidMessageError(
            f"{where}.refusal", f"must be a string (or null), got {type(refusal).__name__}", value=refusal
        )
    if content == "":
        return refusal
    if isinstance(content, str):
        return (TextPart(text=content), TextPart(text=refusal))
    return (*content, TextPart(text=refusal))


def to_message(raw: MessageLike, *, where: str = "message") -> Message:
    """Convert an OpenAI-style dict (or a :class:`Message`) into a :class:`Message`.

    Args:
        raw: A :class:`Message`, or a dict with ``role`` and ``content`` (text or a
            list of ``text`` / ``image_url`` / ``refusal`` parts), and optionally
            ``name``, ``tool_calls``, ``function_call``, ``tool_call_id`` and an assistant's
            message-level ``refusal`` (counted as a ``refusal`` part). Other keys are ignored
            (``id``, ``annotations``, ``cache_control``...), unless ``content`` is missing.
        where: Name used for this message in error messages.

    Raises:
        InvalidMessageError: The dict is malformed; the error names the field. A message with no
            ``content`` (missing or ``None``) is refused, naming ``<where>.content``, when its
            text seems to be under another key (``contents``, ``text``, ``message``), or when its
            role is ``system``, ``developer``, ``user`` or ``tool`` (only an assistant's
            content, or a legacy ``function`` result's, may be ``None``): counted, it would be
            its framing only.
    """
    if isinstance(raw, Message):
        return raw
    if not isinstance(raw, Mapping):
        raise InvalidMessageError(
            where, f"a message must be a dict or Message, got {type(raw).__name__}", value=raw
        )
    role = raw.get("role")
    if role is None:
        raise InvalidMessageError(f"{where}.role", "is missing", fix=f"add one of {sorted(_ROLES)}")
    if not isinstance(role, str) or role not in _ROLES:
        raise InvalidMessageError(
            f"{where}.role", f"unknown role {role!r}", value=role, fix=f"use one of {sorted(_ROLES)}"
        )
    if (
        raw.get("audio") is not None
    ):  # an earlier spoken reply fed back: input audio, as input_audio parts are
        raise InvalidMessageError(
            f"{where}.audio",
            "audio cannot be counted before the call (an assistant's earlier spoken reply is input audio)",
            value=type(raw.get("audio")).__name__,
            fix="count its transcript instead: content=<the reply's transcript> and no audio",
        )
    content_raw = raw.get("content")
    if content_raw is None:
        _check_missing_content(raw, role, where)
    content: str | tuple[Part, ...]
    if content_raw is None:
        content = ""
    elif isinstance(content_raw, str):
        content = content_raw
    elif isinstance(content_raw, Sequence):
        content = tuple(to_part(p, where=f"{where}.content[{i}]") for i, p in enumerate(content_raw))
    else:
        raise InvalidMessageError(
            f"{where}.content",
            f"content must be a string or a list of parts, got {type(content_raw).__name__}",
            value=content_raw,
        )
    content = _with_refusal(content, raw.get("refusal"), where)
    calls = _tool_calls(raw.get("tool_calls"), f"{where}.tool_calls")
    legacy = raw.get("function_call")
    if legacy is not None:
        if not isinstance(legacy, Mapping):
            raise InvalidMessageError(f"{where}.function_call", "must be a dict", value=legacy)
        calls += (
            ToolCall(
                id="",
                name=_str_field(legacy, "name", f"{where}.function_call", required=True) or "",
                arguments=_str_field(legacy, "arguments", f"{where}.function_call", required=False) or "",
            ),
        )
    name = _str_field(raw, "name", where, required=False)
    tool_call_id = _str_field(raw, "tool_call_id", where, required=False)
    try:
        return Message(
            role=cast(Role, role), content=content, name=name, tool_calls=calls, tool_call_id=tool_call_id
        )
    except InvalidMessageError as e:  # Message names itself "message": name it as the caller does
        field = where + e.field.removeprefix("message")
        raise InvalidMessageError(field, e.problem, value=e.value, fix=e.fix) from e


def check_message_list(messages: object, field: str = "messages") -> Iterable[Any]:
    """``messages`` when it is a list (or another iterable) of messages: not a string, bytes or
    dict (one message, or text, would be taken item by item), nor a non-iterable.

    Raises:
        InvalidMessageError: Named ``field``.
    """
    if isinstance(messages, str | bytes | Mapping) or not isinstance(messages, Iterable):
        raise InvalidMessageError(
            field,
            f"must be a list of messages, got {type(messages).__name__}",
            value=messages,
            fix="wrap a single message in a list",
        )
    return messages


def to_messages(raw: Iterable[MessageLike] | object, *, where: str = "messages") -> list[Message]:
    """Convert a sequence of message-likes, naming ``messages[i]`` in errors.

    Raises:
        InvalidMessageError: ``raw`` is not a list, or one of its items is malformed.
    """
    return [to_message(m, where=f"{where}[{i}]") for i, m in enumerate(check_message_list(raw, where))]


def to_openai_dict(message: Message) -> dict[str, Any]:
    """Serialise a :class:`Message` as an OpenAI Chat Completions message dict."""
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if not isinstance(message.content, str):
        out["content"] = [_part_dict(p) for p in message.content]
    if message.name is not None:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def _part_dict(part: Part) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    image: dict[str, Any] = {"url": part.url, "detail": part.detail}
    if part.width and part.height:
        image.update(width=part.width, height=part.height)
    return {"type": "image_url", "image_url": image}
