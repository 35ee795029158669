"""Provider prompt caching: where Anthropic's cache breakpoints go, and what caching saved.

Anthropic caches a prompt *prefix* up to each ``cache_control`` breakpoint, in the order
tools -> system -> messages. :func:`plan_prompt_cache` places breakpoints on the stable
prefix of a Messages API request (the tool definitions, the system prompt, long documents,
optionally the conversation so far) within the API's rules:

* at most 4 breakpoints per request, those already in the request included (a top-level
  ``cache_control``, Anthropic's automatic caching, is one: on the last cacheable block);
* a prefix shorter than the model's documented minimum is never cached, so no breakpoint is
  spent on one (:func:`min_cacheable_tokens`: 1,024 tokens for Sonnet 4/4.5, Opus 4/4.1 and
  Claude 3.x Sonnet/Opus; 2,048 for Sonnet 4.6 and Haiku 3/3.5; 4,096 for Opus 4.5/4.6 and
  Haiku 4.5; unknown Claude models get the largest, 4,096, unless ``min_tokens`` is given);
* TTL ``"5m"`` (the default, ``{"type": "ephemeral"}``) or ``"1h"``
  (``{"type": "ephemeral", "ttl": "1h"}``), and a 1-hour breakpoint never after a 5-minute one.

Tokens per prefix are counted block by block with the model's offline estimate (calibrated,
``exact=False``) unless a counter is passed. The input request is never modified.

OpenAI caches prompts of 1,024 tokens or more automatically; :func:`with_prompt_cache_key`
adds the ``prompt_cache_key`` (and retention) that steers requests to the same cache.

What the cache then saved is priced by
:func:`~tokenbudget_core.prompt_cache_savings.prompt_cache_report`.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeAlias

from .cache_keys import too_deep
from .counting import as_counter, counted
from .errors import InvalidInputError
from .images import anthropic_image_tokens
from .messages import ImagePart
from .registry import ModelRegistry, check_registry

__all__ = [
    "CacheMarks",
    "PromptCacheBreakpoint",
    "cache_marks_of",
    "cache_writes_of",
    "PromptCachePlan",
    "Section",
    "Ttl",
    "aplan_prompt_cache",
    "longest_ttl",
    "min_cacheable_tokens",
    "plan_prompt_cache",
    "with_prompt_cache_key",
]

Ttl: TypeAlias = Literal["5m", "1h"]
CacheMarks: TypeAlias = Literal["5m", "1h", "mixed"]
"""The TTLs a request's ``cache_control`` markers name: all one, or ``mixed`` (both)."""
Section: TypeAlias = Literal["tools", "system", "document", "conversation"]

MAX_BREAKPOINTS = 4
"""Anthropic's limit of ``cache_control`` breakpoints per request."""
_TTLS = ("5m", "1h")
_SECTIONS = ("tools", "system", "document", "conversation")
# Documented minimum cacheable prefix per model family (canonical ids), first match wins.
_MIN_TOKENS: tuple[tuple[re.Pattern[str], int], ...] = (
    (re.compile(r"claude-opus-4-[5-9]"), 4096),
    (re.compile(r"claude-haiku-4"), 4096),
    (re.compile(r"claude-sonnet-4-[6-9]"), 2048),
    (re.compile(r"claude-3-5-haiku|claude-3-haiku"), 2048),
    (re.compile(r"claude-sonnet-4|claude-opus-4|claude-3"), 1024),
)
_UNKNOWN_MIN = 4096
_BINARY_DOC_BYTES_PER_TOKEN = 32  # rough: a PDF page is tens of KB and ~1-3k tokens
_MESSAGE_FRAMING = 3
_UNCACHEABLE_BLOCKS = frozenset({"thinking", "redacted_thinking"})


@dataclass(frozen=True, kw_only=True, slots=True)
class PromptCacheBreakpoint:
    """One place a breakpoint went (or could have gone), and why.

    Example:
        >>> plan = plan_prompt_cache({"model": "claude-sonnet-4-5", "system": "word " * 2000,
        ...     "messages": [{"role": "user", "content": "Hi"}]})
        >>> bp = plan.breakpoints[0]
        >>> bp.section, bp.path, bp.ttl
        ('system', 'system[0]', '5m')
    """

    section: Section
    """What the prefix ends with: ``tools``, ``system``, a long ``document``, or the ``conversation``."""
    path: str
    """The block that carries ``cache_control`` in the new request: ``tools[2]``, ``system[0]``,
    ``messages[0].content[1]``."""
    ttl: Ttl
    """``5m`` or ``1h``."""
    prefix_tokens: int
    """Estimated tokens of everything up to and including this block (what a hit reads)."""
    new_tokens: int
    """Estimated tokens since the previous breakpoint, placed or existing (what this one adds, or
    would have added, to the cache)."""
    reason: str
    """Why it was placed, or why not."""


@dataclass(frozen=True, kw_only=True, slots=True)
class PromptCachePlan:
    """A request with its breakpoints placed, and where they went.

    Example:
        >>> plan = plan_prompt_cache({"model": "claude-sonnet-4-5", "system": "word " * 2000,
        ...     "messages": [{"role": "user", "content": "Hi"}]})
        >>> plan.request["system"][0]["cache_control"]
        {'type': 'ephemeral'}
        >>> plan.min_tokens, plan.cached_tokens > 1024
        (1024, True)
    """

    request: dict[str, Any]
    """The new request (a deep copy of the input, ``cache_control`` added)."""
    model: str
    """The model the minimum was taken for."""
    min_tokens: int
    """The minimum cacheable prefix used."""
    breakpoints: tuple[PromptCacheBreakpoint, ...]
    """Breakpoints placed by this call, in prompt order."""
    skipped: tuple[PromptCacheBreakpoint, ...]
    """Candidates not placed (prefix under the minimum, no breakpoint left), with the reason."""
    existing: int
    """Breakpoints the request already carried (they count against the limit of 4), its top-level
    ``cache_control`` (automatic caching: a breakpoint on the last cacheable block) included."""
    prompt_tokens: int
    """Estimated input tokens of the whole request."""
    cached_tokens: int
    """Estimated tokens up to the last breakpoint (placed or existing): what a full hit reads.

    Token figures are estimates: blocks are counted one by one, without the API's own framing."""


# -- the request's blocks -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Block:
    path: str
    section: Literal["tools", "system", "messages"]
    text: str | None  # counted with the counter
    fixed: int  # tokens known without counting (images, binary documents, framing)
    cacheable: bool
    document: bool  # a document block, always a document candidate
    existing: tuple[Ttl, ...]  # markers the request already carries in or on this block, in prompt order
    message: int = -1  # message index, for messages
    # the request's top-level cache_control (automatic caching) lands here: the last cacheable block
    automatic: Ttl | None = None


def _ttl_of(control: object, where: str) -> Ttl:
    if not isinstance(control, Mapping) or control.get("type") != "ephemeral":
        raise InvalidInputError(where, "must be {'type': 'ephemeral'} (optionally with 'ttl')", value=control)
    ttl = control.get("ttl", "5m")
    if ttl not in _TTLS:
        raise InvalidInputError(f"{where}.ttl", "must be '5m' or '1h'", value=ttl)
    return ttl  # type: ignore[no-any-return]


def cache_writes_of(value: object) -> Ttl | None:
    """The longest TTL of the ``cache_control`` markers in ``value`` (a request's messages,
    content blocks, tools or settings, as plain dicts and lists; read where Anthropic reads them,
    as :func:`cache_marks_of` tells): what a call may write to Anthropic's prompt cache, for its
    worst case (:meth:`~tokenbudget_core.ledger.Ledger.reserve`'s ``cache_writes``). ``None``: no
    marker.

    Raises:
        InvalidInputError: A marker is malformed.
    """
    return longest_ttl(cache_marks_of(value))


def cache_marks_of(value: object) -> CacheMarks | None:
    """The TTLs of the ``cache_control`` markers in ``value`` (as :func:`cache_writes_of` reads
    them): ``"5m"`` or ``"1h"`` when every marker names that TTL, ``"mixed"`` when both are marked,
    ``None`` when none is. What cache writes a reply reports without the 1h/5m split were written
    at (:func:`~tokenbudget_core.usage_sources.usage_from_langchain`'s ``marked_ttl``).

    Markers are read where Anthropic reads them: the ``cache_control`` of ``value`` itself and of
    every dict reached through lists and the ``tools``, ``system``, ``messages``, ``content`` and
    ``source`` fields (a request or its top-level option, a tool definition, a message, a content
    block and the blocks it nests), plus a LangChain standard block's ``extras`` / ``metadata``
    one. Every other field is data, never a marker: a tool call's ``input`` / ``args``, a tool's
    ``input_schema`` / ``parameters`` (a tool argument named ``cache_control`` is not one).

    Example:
        >>> cache_marks_of([{"type": "tool_use", "id": "t1", "name": "set_headers",
        ...     "input": {"cache_control": "no-store"}, "cache_control": {"type": "ephemeral"}}])
        '5m'

    Raises:
        InvalidInputError: A marker is malformed.
    """
    found: CacheMarks | None = None
    stack: list[tuple[object, str]] = [(value, "request")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, Mapping):
            control, at = _own_marker(item, where)
            if control is not None:
                ttl = _ttl_of(control, at)
                found = ttl if found in (None, ttl) else "mixed"
            stack.extend((item[k], f"{where}.{k}") for k in _MARKED_FIELDS if k in item)
        elif isinstance(item, list | tuple):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))
    return found


def _own_marker(item: Mapping[Any, Any], where: str) -> tuple[object, str]:
    """``item``'s own ``cache_control`` (``None``: none) and where it sits. A LangChain standard
    block (``image``, ``file``, ``text-plain``...) may carry it in ``extras`` (or the older
    ``metadata``): ``langchain_anthropic`` moves it onto the block it sends."""
    control = item.get("cache_control")
    if control is not None or not isinstance(item.get("type"), str):
        return control, f"{where}.cache_control"
    for key in ("extras", "metadata"):
        extra = item.get(key)
        if isinstance(extra, Mapping) and extra.get("cache_control") is not None:
            return extra["cache_control"], f"{where}.{key}.cache_control"
    return None, ""


def longest_ttl(marks: CacheMarks | None) -> Ttl | None:
    """The longest TTL of :func:`cache_marks_of`'s answer: what a call reserves cache writes at."""
    return "1h" if marks == "mixed" else marks


_NESTED_BLOCKS = ("content", "source")
"""Where blocks nest other blocks (a tool or search result's content, a document's content
source): markers there are breakpoints too. Other fields (a tool call's input) are data."""
_MARKED_FIELDS = ("tools", "system", "messages", *_NESTED_BLOCKS)
"""Where :func:`cache_marks_of` looks for markers below a dict: the request's parts, a message's
content, the blocks a block nests. Every other field (``input``, ``input_schema``,
``parameters``, ``args``...) is data, whatever keys it holds."""


def _nested_ttls(value: object, where: str) -> list[Ttl]:
    """The ``cache_control`` markers of the blocks nested in ``value``, in prompt order."""
    found: list[Ttl] = []
    if isinstance(value, Mapping):
        if "cache_control" in value:
            found.append(_ttl_of(value["cache_control"], f"{where}.cache_control"))
        for key in _NESTED_BLOCKS:
            if key in value:
                found += _nested_ttls(value[key], f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found += _nested_ttls(item, f"{where}[{i}]")
    return found


def _check_source(block: Mapping[str, Any], path: str) -> None:
    source = block.get("source")
    if not isinstance(source, Mapping) or not isinstance(source.get("type"), str):
        raise InvalidInputError(
            f"{path}.source", "must be a dict with a 'type' (base64, url, text, content, file...)",
            value=source,
            fix="send it as the Messages API documents it: {'type': 'base64', 'media_type', 'data'}",
        )  # fmt: skip
    if source["type"] == "text" and not isinstance(source.get("data"), str):
        raise InvalidInputError(
            f"{path}.source.data", "must be the document's text (a string)", value=source.get("data")
        )


def _binary_tokens(block: Mapping[str, Any]) -> int:
    """An image's tokens, or a binary document's (PDF...: its size, at least a page's worth)."""
    source = block.get("source")
    source = source if isinstance(source, Mapping) else {}
    if block.get("type") == "image":
        if source.get("type") == "base64":
            url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
        else:
            url = str(source.get("url", ""))
        return anthropic_image_tokens(ImagePart(url=url)).tokens
    data = source.get("data")
    size = len(data) * 3 // 4 if isinstance(data, str) else 0
    return max(1600, size // _BINARY_DOC_BYTES_PER_TOKEN)


def _source_type(block: Mapping[str, Any]) -> object:
    source = block.get("source")
    return source.get("type") if isinstance(source, Mapping) else None


def _content_source(block: Mapping[str, Any], path: str, message: int) -> tuple[str, int]:
    """The text and fixed tokens of a custom-content document (``source.type == "content"``, the
    citations format): its ``content`` is a string or text (and image) blocks, counted as such,
    not as a binary file."""
    content = block["source"].get("content")
    where = f"{path}.source.content"
    if isinstance(content, str):
        return content, 0
    if not isinstance(content, list | tuple):
        raise InvalidInputError(
            where, "must be a string or a list of content blocks", value=content,
            fix="send it as the Messages API documents it: [{'type': 'text', 'text': ...}, ...]",
        )  # fmt: skip
    parts = [_content_block(b, f"{where}[{k}]", message) for k, b in enumerate(content)]
    return "\n".join(p.text for p in parts if p.text), sum(p.fixed for p in parts)


def _content_block(block: object, path: str, message: int) -> _Block:
    if not isinstance(block, Mapping) or not isinstance(block.get("type"), str):
        raise InvalidInputError(path, "a content block must be a dict with a 'type'", value=block)
    kind = block["type"]
    existing = [
        ttl for key in _NESTED_BLOCKS if key in block for ttl in _nested_ttls(block[key], f"{path}.{key}")
    ]
    if "cache_control" in block:  # the block's own marker closes the prefix after what it nests
        existing.append(_ttl_of(block["cache_control"], f"{path}.cache_control"))
    if kind in ("image", "document"):
        _check_source(block, path)
    text: str | None = None
    fixed = 0
    if kind == "text":
        if not isinstance(block.get("text"), str):
            raise InvalidInputError(f"{path}.text", "must be a string", value=block.get("text"))
        text = block["text"]
    elif kind == "document" and _source_type(block) == "text":
        text = str(block["source"].get("data", ""))
    elif kind == "document" and _source_type(block) == "content":
        text, fixed = _content_source(block, path, message)
    elif kind in ("image", "document"):  # base64 / url / file: binary, counted by size
        fixed = _binary_tokens(block)
    else:  # tool_use, tool_result, search_result...: their JSON is a fair estimate
        rest = {k: v for k, v in block.items() if k != "cache_control"}
        text = _block_json(rest, path, "pass the block as the API takes it", ensure_ascii=False, default=str)
    cacheable = kind not in _UNCACHEABLE_BLOCKS and not (kind == "text" and not text)
    return _Block(path, "messages", text, fixed, cacheable, kind == "document", tuple(existing), message)


def _block_json(
    value: Any, path: str, fix: str, *, ensure_ascii: bool, default: Callable[[Any], Any] | None
) -> str:
    """``value`` as the JSON a request sends (counted as its text).

    Raises:
        InvalidInputError: It is not plain JSON, or is nested too deeply to encode; named ``path``.
    """
    try:
        return json.dumps(value, ensure_ascii=ensure_ascii, sort_keys=True, default=default)
    except RecursionError:
        raise too_deep(path) from None
    except (TypeError, ValueError) as e:
        problem = f"must be plain JSON (it is sent as JSON): {e}"
        raise InvalidInputError(path, problem, value=value, fix=fix) from e


def _blocks(request: Mapping[str, Any]) -> list[_Block]:
    out: list[_Block] = []
    tools = request.get("tools") or []
    if not isinstance(tools, Sequence) or isinstance(tools, str):
        raise InvalidInputError("request.tools", "must be a list of tool definitions", value=tools)
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping):
            raise InvalidInputError(f"tools[{i}]", "a tool definition must be a dict", value=tool)
        ttl = (
            (_ttl_of(tool["cache_control"], f"tools[{i}].cache_control"),) if "cache_control" in tool else ()
        )
        text = _block_json(
            {k: v for k, v in tool.items() if k != "cache_control"}, f"tools[{i}]",
            "pass the tool definition as the API takes it: name, description, input_schema",
            ensure_ascii=True, default=None,
        )  # fmt: skip
        out.append(_Block(f"tools[{i}]", "tools", text, 0, True, False, ttl))
    system = request.get("system")
    if isinstance(system, str):
        if system:
            out.append(_Block("system[0]", "system", system, 0, True, False, ()))
    elif isinstance(system, Sequence):
        for i, block in enumerate(system):
            b = _content_block(block, f"system[{i}]", -1)
            out.append(replace(b, section="system", document=False))
    elif system is not None:
        raise InvalidInputError("request.system", "must be a string or a list of text blocks", value=system)
    messages = request.get("messages")
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise InvalidInputError(
            "request.messages", "must be a non-empty list of messages", value=messages,
            fix="pass a Messages API request: {'model': ..., 'messages': [{'role': 'user', 'content': ...}]}",
        )  # fmt: skip
    for m, message in enumerate(messages):
        if not isinstance(message, Mapping) or message.get("role") not in ("user", "assistant"):
            raise InvalidInputError(
                f"messages[{m}].role", "must be 'user' or 'assistant'", value=message,
                fix="system prompts go in the request's 'system' field",
            )  # fmt: skip
        content = message.get("content")
        out.append(_Block(f"messages[{m}]", "messages", None, _MESSAGE_FRAMING, False, False, (), m))
        if isinstance(content, str):
            out.append(
                _Block(f"messages[{m}].content[0]", "messages", content, 0, bool(content), False, (), m)
            )
        elif isinstance(content, Sequence):
            out.extend(_content_block(b, f"messages[{m}].content[{j}]", m) for j, b in enumerate(content))
        else:
            raise InvalidInputError(
                f"messages[{m}].content", "must be a string or a list of blocks", value=content
            )
    if request.get("cache_control") is not None:
        # Automatic caching: Anthropic puts this breakpoint on the last cacheable block, and it
        # takes one of the 4 slots like any marker (its TTL is ordered like theirs too).
        automatic = _ttl_of(request["cache_control"], "request.cache_control")
        last = max((i for i, b in enumerate(out) if b.cacheable), default=None)
        if last is not None:
            out[last] = replace(out[last], automatic=automatic)
    return out


_AUTOMATIC = "request.cache_control"


def _present(blocks: list[_Block]) -> list[tuple[int, Ttl, str]]:
    """``(block index, TTL, where it is written)`` of the breakpoints the request already carries,
    in prompt order; the automatic one last on its block (it caches the block with what it nests)."""
    out = [(i, t, b.path) for i, b in enumerate(blocks) for t in b.existing]
    out += [(i, b.automatic, _AUTOMATIC) for i, b in enumerate(blocks) if b.automatic is not None]
    return sorted(out, key=lambda mark: mark[0])  # stable: explicit markers first on a block


# -- planning -----------------------------------------------------------------------------------


def min_cacheable_tokens(model: str, *, registry: ModelRegistry | None = None) -> int:
    """The shortest prefix Anthropic caches for ``model`` (shorter prefixes are silently not cached).

    Raises:
        InvalidInputError: ``model`` is not a Claude model (OpenAI caches automatically from 1,024),
            or ``registry`` is not a ``ModelRegistry``.
        UnknownModelError: The registry does not know ``model``.

    Example:
        >>> min_cacheable_tokens("claude-sonnet-4-5-20250929"), min_cacheable_tokens("claude-haiku-4-5")
        (1024, 4096)
    """
    if not isinstance(model, str) or not model.strip():
        raise InvalidInputError("model", "must be a non-empty model name", value=model)
    info = check_registry(registry).get(model)
    # Claude served by Anthropic, or by a cloud (Bedrock ``anthropic.claude-...``, Vertex): the
    # same Messages API markers
    if info.provider != "anthropic" and "claude-" not in info.canonical:
        fix = (
            "OpenAI caches prompts automatically: use with_prompt_cache_key() instead"
            if info.provider == "openai"
            else "this provider's prompt caching is not set with cache_control breakpoints"
        )
        raise InvalidInputError(
            "model", f"cache_control breakpoints are Claude's; {model!r} is a model of {info.provider}",
            value=model, fix=fix,
        )  # fmt: skip
    for pattern, tokens in _MIN_TOKENS:
        if pattern.search(info.canonical):
            return tokens
    return _UNKNOWN_MIN


@dataclass(frozen=True, slots=True)
class _Options:
    model: str
    ttls: dict[str, Ttl]
    conversation: bool
    documents: bool
    document_tokens: int
    min_tokens: int
    max_breakpoints: int


def _options(
    request: object,
    model: str | None,
    ttl: object,
    conversation: object,
    documents: object,
    document_tokens: object,
    min_tokens: object,
    max_breakpoints: object,
    registry: ModelRegistry | None,
) -> _Options:
    if not isinstance(request, Mapping):
        raise InvalidInputError("request", "must be a Messages API request dict", value=request)
    check_registry(registry)
    name = model if model is not None else request.get("model")
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError("model", "is missing", value=name, fix="pass model= or set request['model']")
    if isinstance(ttl, str):
        ttls: dict[str, Any] = dict.fromkeys(_SECTIONS, ttl)
    elif isinstance(ttl, Mapping):
        unknown = set(ttl) - set(_SECTIONS)
        if unknown:
            raise InvalidInputError(
                "ttl", f"unknown sections {sorted(unknown)}", value=ttl, fix=f"use {_SECTIONS}"
            )
        ttls = {s: ttl.get(s, "5m") for s in _SECTIONS}
    else:
        raise InvalidInputError("ttl", "must be '5m', '1h' or a dict of them by section", value=ttl)
    for section, value in ttls.items():
        if value not in _TTLS:
            raise InvalidInputError(f"ttl.{section}", "must be '5m' or '1h'", value=value)
    for field, flag in (("conversation", conversation), ("documents", documents)):
        if not isinstance(flag, bool):
            raise InvalidInputError(field, "must be True or False", value=flag)
    for field, n, low, high in (
        ("document_tokens", document_tokens, 1, None),
        ("min_tokens", min_tokens, 0, None),
        ("max_breakpoints", max_breakpoints, 1, MAX_BREAKPOINTS),
    ):
        if n is None and field == "min_tokens":
            continue
        if isinstance(n, bool) or not isinstance(n, int) or n < low or (high is not None and n > high):
            bounds = f"between {low} and {high}" if high is not None else f">= {low}"
            raise InvalidInputError(field, f"must be an integer {bounds}", value=n)
    minimum = min_tokens if isinstance(min_tokens, int) else min_cacheable_tokens(name, registry=registry)
    return _Options(name, ttls, conversation, documents, document_tokens, minimum, max_breakpoints)  # type: ignore[arg-type]


def _default_counter(model: str, registry: ModelRegistry | None) -> Any:
    from .estimating import EstimatingTokenCounter

    return EstimatingTokenCounter(check_registry(registry).get(model))


def _candidates(blocks: list[_Block], tokens: list[int], o: _Options) -> list[tuple[int, Section]]:
    """``(block index, section)`` of every place a breakpoint could help, in prompt order."""
    out: list[tuple[int, Section]] = []
    for section in ("tools", "system"):
        idx = [i for i, b in enumerate(blocks) if b.section == section and b.cacheable]
        if idx:
            out.append((idx[-1], section))
    msg = [i for i, b in enumerate(blocks) if b.section == "messages" and b.cacheable]
    if o.documents:
        out += [(i, "document") for i in msg if blocks[i].document or tokens[i] >= o.document_tokens]
    if o.conversation and msg:
        last = max(b.message for b in blocks)
        tail = [i for i in msg if blocks[i].message == last]
        if tail and tail[-1] not in {i for i, _ in out}:
            out.append((tail[-1], "conversation"))
    return out


def _plan(
    request: Mapping[str, Any], blocks: list[_Block], tokens: list[int], o: _Options
) -> PromptCachePlan:
    prefix: list[int] = []
    running = 0
    for n in tokens:
        running += n
        prefix.append(running)
    carried = _present(blocks)
    present: list[tuple[int, Ttl | None]] = [(i, t) for i, t, _ in carried]
    existing = sorted({i for i, _ in present})
    if len(present) > MAX_BREAKPOINTS:
        raise InvalidInputError(
            "request",
            f"carries {len(present)} cache_control breakpoints; Anthropic allows {MAX_BREAKPOINTS}",
            value=[where for _, _, where in carried],
            fix="remove some cache_control markers (a top-level one, automatic caching, counts as one)",
        )  # fmt: skip
    slots = max(0, o.max_breakpoints - len(present))
    eligible: list[tuple[int, Section]] = []
    skipped: dict[int, tuple[Section, str]] = {}
    for i, section in _candidates(blocks, tokens, o):
        if i in existing:
            continue
        if prefix[i] < o.min_tokens:
            why = f"prefix of ~{prefix[i]} tokens is under the {o.min_tokens}-token minimum of {o.model}"
            skipped[i] = (section, why)
        else:
            eligible.append((i, section))
    chosen = _choose(eligible, prefix, existing, slots, o.min_tokens)
    for i, section in eligible:
        if (i, section) not in chosen:
            skipped[i] = (
                section,
                f"no breakpoint left (at most {o.max_breakpoints}, {len(present)} already present)",
            )
    marks = sorted(present + [(i, o.ttls[s]) for i, s in chosen], key=lambda mark: mark[0])  # stable
    _check_ttl_order(marks, blocks)
    new = copy.deepcopy(dict(request))
    placed: list[PromptCacheBreakpoint] = []
    for i, section in chosen:
        path = _mark(new, blocks[i], o.ttls[section])
        before = max([p for p, _ in marks if p < i], default=-1)
        placed.append(
            PromptCacheBreakpoint(
                section=section, path=path, ttl=o.ttls[section], prefix_tokens=prefix[i],
                new_tokens=prefix[i] - (prefix[before] if before >= 0 else 0),
                reason=_REASONS[section] + f"; ~{prefix[i]} tokens >= the {o.min_tokens}-token minimum",
            )
        )  # fmt: skip
    skipped_out = tuple(
        PromptCacheBreakpoint(
            section=s, path=blocks[i].path, ttl=o.ttls[s], prefix_tokens=prefix[i],
            new_tokens=_tokens_between(prefix, [p for p, _ in marks], i), reason=why,
        )
        for i, (s, why) in sorted(skipped.items())
    )  # fmt: skip
    last = marks[-1][0] if marks else -1
    return PromptCachePlan(
        request=new, model=o.model, min_tokens=o.min_tokens, breakpoints=tuple(placed), skipped=skipped_out,
        existing=len(present), prompt_tokens=running, cached_tokens=prefix[last] if last >= 0 else 0,
    )  # fmt: skip


_REASONS: dict[str, str] = {
    "tools": "tool definitions rarely change",
    "system": "the system prompt is the stable instruction prefix",
    "document": "a long document is re-read by the next questions",
    "conversation": "the conversation so far is the next turn's prefix",
}


def _tokens_between(prefix: list[int], marks: list[int], i: int) -> int:
    """Tokens from the last of ``marks`` before block ``i`` up to ``i`` (inclusive)."""
    before = max([p for p in marks if p < i], default=-1)
    return prefix[i] - (prefix[before] if before >= 0 else 0)


def _choose(
    eligible: list[tuple[int, Section]], prefix: list[int], existing: list[int], slots: int, minimum: int
) -> list[tuple[int, Section]]:
    """The candidates that get the ``slots`` breakpoints left, in prompt order.

    Each breakpoint caches the prefix up to it, so what one adds is the tokens since the breakpoint
    before it (a kept candidate or an existing marker), not its whole prefix. While too many
    candidates remain, the one adding the fewest tokens is dropped (on a tie, the earlier), except
    the protected ones, dropped last and in this order: the furthest prefix (protected only when it
    adds at least ``minimum`` tokens over the one before it: otherwise that one caches nearly as
    much), then the system prompt (tools -> system is the prefix every request shares, so it is
    kept first; a tools breakpoint of its own competes on size, the system's covers the tools).
    """
    kept = list(eligible)
    if len(kept) <= slots:
        return kept
    rank: dict[int, int] = {}
    for i, section in kept:
        rank[i] = 3 if section == "system" else 0
    last = kept[-1][0]
    if rank[last] == 0 and _tokens_between(prefix, existing + [i for i, _ in kept[:-1]], last) >= minimum:
        rank[last] = 1
    while len(kept) > slots:
        marks = existing + [i for i, _ in kept]
        victim = min(kept, key=lambda c: (rank[c[0]], _tokens_between(prefix, marks, c[0]), c[0]))
        kept.remove(victim)
    return kept


def _check_ttl_order(marks: list[tuple[int, Ttl | None]], blocks: list[_Block]) -> None:
    def at(i: int, ttl: Ttl | None) -> str:
        auto = blocks[i].automatic == ttl  # (a block carrying the automatic one gets no new one)
        return f"{blocks[i].path} (where the top-level {_AUTOMATIC} goes)" if auto else blocks[i].path

    seen_5m: int | None = None
    for i, ttl in marks:
        if ttl == "5m" and seen_5m is None:
            seen_5m = i
        elif ttl == "1h" and seen_5m is not None:
            raise InvalidInputError(
                "ttl", f"a 1h breakpoint at {at(i, ttl)} would follow a 5m one at {at(seen_5m, '5m')}",
                value=ttl,
                fix="give earlier sections the longer TTL, e.g. ttl={'tools': '1h', 'system': '1h'}",
            )  # fmt: skip


def _mark(request: dict[str, Any], block: _Block, ttl: Ttl) -> str:
    """Put the breakpoint on ``block`` of ``request`` (a deep copy of the caller's). The block and
    the lists holding it are replaced by copies, never written into: a deep copy keeps objects
    shared where the caller shared them (one document dict in several turns, one block in the
    system prompt and a message), and a marker written into one would land on every place it is."""
    control: dict[str, str] = {"type": "ephemeral"} if ttl == "5m" else {"type": "ephemeral", "ttl": "1h"}
    if block.section == "tools":
        tools = request["tools"] = list(request["tools"])
        k = int(block.path[6:-1])
        tools[k] = {**tools[k], "cache_control": control}
        return block.path
    if block.section == "system":
        system = request["system"]
        system = request["system"] = (
            [{"type": "text", "text": system}] if isinstance(system, str) else list(system)
        )
        k = int(block.path[7:-1])
        system[k] = {**system[k], "cache_control": control}
        return block.path
    m, j = (int(x) for x in re.findall(r"\d+", block.path))
    messages = request["messages"] = list(request["messages"])
    message = messages[m] = dict(messages[m])
    content = message["content"]
    content = message["content"] = (
        [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
    )
    content[j] = {**content[j], "cache_control": control}
    return block.path


def plan_prompt_cache(
    request: Mapping[str, Any],
    *,
    model: str | None = None,
    ttl: Ttl | Mapping[Section, Ttl] = "5m",
    conversation: bool = False,
    documents: bool = True,
    document_tokens: int = 1024,
    min_tokens: int | None = None,
    max_breakpoints: int = MAX_BREAKPOINTS,
    counter: Any = None,
    registry: ModelRegistry | None = None,
) -> PromptCachePlan:
    """Place Anthropic ``cache_control`` breakpoints on the stable prefix of a Messages request.

    Candidates, in prompt order: the last tool, the last system block, each long document in the
    messages (a ``document`` block, or a block of ``document_tokens`` or more) and, with
    ``conversation=True``, the last block of the last message (the next turn's prefix). A candidate
    whose prefix is under the model's minimum is skipped. When more remain than breakpoints left,
    the system prompt is kept first (its breakpoint caches tools + system, the prefix every request
    shares), then the furthest prefix unless it adds fewer tokens than the minimum over the
    candidate before it (which then caches nearly as much); of the rest, the tools' own breakpoint
    included (it only pays when the system prompt changes and the tools do not), those adding the
    fewest new tokens (since the breakpoint before them, not their whole prefix) are dropped first.

    Breakpoints the request already carries count against ``max_breakpoints`` and are never moved:
    the blocks' ``cache_control`` markers and a top-level ``cache_control`` (Anthropic's automatic
    caching, which puts a breakpoint on the last cacheable block; its TTL is ordered like the
    others', so a 1h one there needs ``ttl="1h"`` on the breakpoints placed before it).

    Args:
        request: A Messages API request dict (``system`` string or blocks, ``tools``, ``messages``).
        model: The model (default: ``request["model"]``).
        ttl: ``"5m"``, ``"1h"``, or a TTL per section (``{"tools": "1h", "system": "1h"}``).
        conversation: Also cache the conversation so far (multi-turn chats).
        documents: Cache long documents in the messages.
        document_tokens: The size from which a text block counts as a long document.
        min_tokens: Override the model's documented minimum cacheable prefix.
        max_breakpoints: At most this many breakpoints in all (1..4; existing ones count).
        counter: Anything with ``count(text)`` (default: the model's offline estimate), or a
            model name whose counter counts.
        registry: The model registry (default: the process-wide one).

    Raises:
        InvalidInputError: The request is malformed (the error names the field), it already carries
            more than 4 breakpoints (its top-level ``cache_control`` included), a 1h breakpoint
            would follow a 5m one, an option is out of
            range, or the model is not a Claude model; ``counter`` is no counter (a ``list``,
            ``tuple`` or ``bytes`` is not one) or it returned something other than a
            non-negative int; ``registry`` is not a ``ModelRegistry``; a block is nested too
            deeply to send as JSON.
        UnknownModelError: The registry does not know the model (pass ``min_tokens`` and ``counter``),
            or ``counter`` names a model it does not know (named ``counter``).

    Example:
        >>> plan = plan_prompt_cache({
        ...     "model": "claude-sonnet-4-5", "system": "You answer from the manual. " * 300,
        ...     "messages": [{"role": "user", "content": "How do I reset it?"}]}, ttl="1h")
        >>> [(b.section, b.ttl) for b in plan.breakpoints]
        [('system', '1h')]
    """
    o = _options(request, model, ttl, conversation, documents, document_tokens, min_tokens, max_breakpoints,
                 registry)  # fmt: skip
    blocks = _blocks(request)
    count = as_counter(counter) if counter is not None else _default_counter(o.model, registry)
    tokens = [b.fixed + (counted(count.count(b.text), count) if b.text else 0) for b in blocks]
    return _plan(request, blocks, tokens, o)


async def aplan_prompt_cache(
    request: Mapping[str, Any],
    *,
    model: str | None = None,
    ttl: Ttl | Mapping[Section, Ttl] = "5m",
    conversation: bool = False,
    documents: bool = True,
    document_tokens: int = 1024,
    min_tokens: int | None = None,
    max_breakpoints: int = MAX_BREAKPOINTS,
    counter: Any = None,
    registry: ModelRegistry | None = None,
) -> PromptCachePlan:
    """Async twin of :func:`plan_prompt_cache` (uses the counter's ``acount`` when it has one)."""
    o = _options(request, model, ttl, conversation, documents, document_tokens, min_tokens, max_breakpoints,
                 registry)  # fmt: skip
    blocks = _blocks(request)
    count = as_counter(counter) if counter is not None else _default_counter(o.model, registry)
    acount: Callable[[str], Awaitable[int]] | None = getattr(count, "acount", None)
    tokens = []
    for b in blocks:
        n = 0
        if b.text:
            n = counted(await acount(b.text) if callable(acount) else count.count(b.text), count)
        tokens.append(b.fixed + n)
    return _plan(request, blocks, tokens, o)


def with_prompt_cache_key(
    request: Mapping[str, Any], key: str, *, retention: Literal["in_memory", "24h"] | None = None
) -> dict[str, Any]:
    """A copy of an OpenAI request (Chat Completions or Responses) with ``prompt_cache_key`` set.

    OpenAI caches prompts of 1,024 tokens or more on its own; requests that share a prefix and a
    ``prompt_cache_key`` are routed to the same cache, so hits are likelier. Read what was
    cached with ``Usage.from_openai(response).cache_read_tokens`` and ``prompt_cache_report()``.

    Args:
        request: The request's keyword arguments as a dict.
        key: A stable id of requests sharing a prefix (a feature, a tenant, a conversation).
        retention: ``prompt_cache_retention``: ``"in_memory"`` or ``"24h"`` (extended, where offered).

    Raises:
        InvalidInputError: ``key`` is empty or not a string, ``retention`` is unknown, or the
            request already carries a different key.

    Example:
        >>> with_prompt_cache_key({"model": "gpt-4o", "messages": []}, "support-v2")["prompt_cache_key"]
        'support-v2'
    """
    if not isinstance(request, Mapping):
        raise InvalidInputError("request", "must be a dict of request arguments", value=request)
    if not isinstance(key, str) or not key.strip():
        raise InvalidInputError("key", "must be a non-empty string", value=key)
    if retention is not None and retention not in ("in_memory", "24h"):
        raise InvalidInputError("retention", "must be 'in_memory' or '24h'", value=retention)
    current = request.get("prompt_cache_key")
    if current is not None and current != key:
        raise InvalidInputError(
            "request.prompt_cache_key", f"is already {current!r}, not {key!r}", value=current,
            fix="keep one key per shared prefix; drop the request's own key to replace it",
        )  # fmt: skip
    out = {**request, "prompt_cache_key": key}
    if retention is not None:
        out["prompt_cache_retention"] = retention
    return out
