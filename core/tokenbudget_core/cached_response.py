"""What a response cache stores and what a hit returns.

A :class:`CachedResponse` is stored as plain JSON (:meth:`CachedResponse.to_json`) and read
back field by field (:meth:`CachedResponse.from_json`), never with pickle and never as a host
framework's serialised objects: a tampered entry can at worst be a wrong string, not code.
A :class:`CacheHit` carries the answer plus its audit data (kind, key, score, the matched
prompt) and what it saved, priced with :func:`~tokenbudget_core.pricing.cost_of`.

Why an answer ended is read here, once for every adapter: :func:`stop_reason_of` from a response's
metadata or raw response, :class:`StreamStop` over every chunk of a streamed one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Literal

from .cache_keys import canonical_json, plain_json
from .errors import InvalidInputError
from .usage import Usage
from .usage_sources import as_dict

__all__ = [
    "NORMAL_STOPS",
    "PROVIDER_STREAM_EVENTS",
    "STOP_REASON_KEYS",
    "TOOL_CALL_STOPS",
    "CacheHit",
    "CachedResponse",
    "StreamStop",
    "stop_reason_of",
]

NORMAL_STOPS = frozenset({"stop", "end_turn", "stop_sequence", "eos", "eos_token", "complete", "finished"})
"""Finish reasons of a complete answer (compared case-insensitively): only these are cached."""
TOOL_CALL_STOPS = frozenset({"tool_calls", "tool_use", "function_call"})
"""Finish reasons of a tool-call response (cached only when the cache opts in)."""
STOP_REASON_KEYS = ("finish_reason", "stop_reason", "stopReason", "finishReason", "done_reason")
"""Where providers put why an answer ended: ``finish_reason`` (OpenAI, Gemini through LangChain),
``stop_reason`` (Anthropic), ``stopReason`` (Bedrock Converse), ``finishReason`` (Gemini REST),
``done_reason`` (Ollama); at the top level, per item of ``choices`` / ``candidates``, or in the
``delta`` of an Anthropic ``message_delta`` stream event."""
_PER_ITEM = ("choices", "candidates")
PROVIDER_STREAM_EVENTS = frozenset(
    {"message_start", "content_block_start", "content_block_delta", "content_block_stop", "message_delta"}
)
"""The ``type`` of an Anthropic Messages stream event (its ``message_delta`` names the stop reason
in its ``delta``). With OpenAI's ``chat.completion.chunk`` (its ``object``), the events of a
provider whose stream always names why it ended in one of them (:class:`StreamStop`)."""
_OPENAI_CHUNK = "chat.completion.chunk"


def _reasons(source: Mapping[str, Any]) -> list[str]:
    found = [source.get(k) for k in STOP_REASON_KEYS]
    for name in _PER_ITEM:
        items = source.get(name)
        if isinstance(items, list | tuple):
            found += [i.get(k) for i in items if isinstance(i, Mapping) for k in STOP_REASON_KEYS]
    details = source.get("incomplete_details")  # OpenAI Responses API: status "incomplete"
    if isinstance(details, Mapping):
        found.append(details.get("reason"))
    if source.get("status") == "incomplete":
        found.append("incomplete")
    delta = source.get("delta") if source.get("type") == "message_delta" else None
    if isinstance(delta, Mapping):  # Anthropic's stream names it in its message_delta's delta
        found += [delta.get(k) for k in STOP_REASON_KEYS]
    return [r for r in found if isinstance(r, str) and r]


def stop_reason_of(*sources: object) -> str | None:
    """Why a provider's answer ended, read from its response metadata or raw response (dicts).

    Every reason found under :data:`STOP_REASON_KEYS` (and the OpenAI Responses API's
    ``incomplete_details.reason``, an Anthropic ``message_delta`` event's ``delta.stop_reason``)
    is read. The first that is not a normal stop wins (an answer
    cut off at ``length`` / ``max_tokens`` / ``MAX_TOKENS`` anywhere is cut off), else the first
    normal one; ``None`` when no source names one. Sources that are not dicts are skipped.

    Example:
        >>> stop_reason_of({"stopReason": "max_tokens"}), stop_reason_of({"done_reason": "stop"})
        ('max_tokens', 'stop')
        >>> stop_reason_of({"finish_reason": "stop"}, {"done_reason": "length"}), stop_reason_of(None)
        ('length', None)
        >>> stop_reason_of({"type": "message_delta", "delta": {"stop_reason": "max_tokens"}})
        'max_tokens'
    """
    reasons = [r for source in sources if isinstance(source, Mapping) for r in _reasons(source)]
    unusual = [r for r in reasons if r.casefold() not in NORMAL_STOPS]
    first = unusual or reasons
    return first[0] if first else None


class StreamStop:
    """Why a streamed answer ended, read from every chunk as it passes (:meth:`add`), not from
    the last one alone: a stream whose closing chunk carries usage only (OpenAI's with
    ``stream_options={"include_usage": True}``: ``choices`` empty) names its ``length`` stop in
    the chunk before, and Anthropic's names it in a ``message_delta`` event before its
    ``message_stop``. The rule every adapter caching a stream applies (it only pulls each
    chunk's raw response and metadata out of its host's objects).

    Example:
        >>> stop = StreamStop()
        >>> stop.add({"object": "chat.completion.chunk", "choices": [{"finish_reason": "length"}]})
        >>> stop.add({"object": "chat.completion.chunk", "choices": [], "usage": {"total_tokens": 9}})
        >>> stop.reason()
        'length'
        >>> silent = StreamStop()
        >>> silent.add({"type": "content_block_delta", "delta": {"text": "Hi"}})
        >>> silent.reason(), StreamStop().reason()
        ('unreported', 'stop')
    """

    __slots__ = ("_provider_events", "_reasons")

    def __init__(self) -> None:
        self._reasons: list[str] = []
        self._provider_events = False

    def add(self, raw: object = None, *reported: object) -> None:
        """Read one chunk: ``raw``, its raw response (a dict, or an SDK object with
        ``model_dump()``; anything else is skipped), and ``reported``, the metadata its host
        puts beside it (some integrations put the stop reason there)."""
        try:
            data = None if raw is None else as_dict(raw, "raw")
        except InvalidInputError:
            data = None
        if data is not None and (
            data.get("object") == _OPENAI_CHUNK or data.get("type") in PROVIDER_STREAM_EVENTS
        ):
            self._provider_events = True
        reason = stop_reason_of(data, *reported)
        if reason is not None:
            self._reasons.append(reason)

    def reason(self) -> str:
        """Why the stream ended, by :func:`stop_reason_of`'s rule over every chunk's reason (the
        first cut-off or failed one wins: one anywhere means the answer is not cached).

        A stream of a provider's own events that always name the reason in one of them (OpenAI
        chunks, ``object`` ``chat.completion.chunk``; Anthropic Messages events,
        :data:`PROVIDER_STREAM_EVENTS`) none of which names it is ``unreported``, not a normal
        stop: its integration did not pass on the event that says whether the answer was cut
        off (``llama-index-llms-anthropic`` yields its text deltas only). Other chunks naming no
        reason (a custom LLM's) end normally (``stop``), as a non-streamed answer naming none does.
        """
        reason = stop_reason_of(*({"finish_reason": r} for r in self._reasons))
        if reason is not None:
            return reason
        return "unreported" if self._provider_events else "stop"


@dataclass(frozen=True, kw_only=True, slots=True)
class CachedResponse:
    """An answer as a cache stores it: plain JSON, never pickle.

    Args:
        content: The answer text.
        model: The model that answered.
        usage: What the original call used (prices what a hit saves).
        finish_reason: Why the answer ended (``stop``, ``end_turn``, ``length``...).
        tool_calls: Tool calls as JSON dicts.
        extra: Host data that round-trips as JSON (e.g. LangChain ``generation_info``).

    Raises:
        InvalidInputError: A field of the wrong type, or ``tool_calls``/``extra`` that are not plain JSON.

    Example:
        >>> usage = Usage(input_tokens=12, output_tokens=2)
        >>> r = CachedResponse(content="Paris.", model="gpt-4o", usage=usage)
        >>> CachedResponse.from_json(r.to_json()) == r
        True
    """

    content: str
    """The answer text."""
    model: str
    """The model that answered."""
    usage: Usage
    """What the original call used."""
    finish_reason: str = "stop"
    """Why the answer ended."""
    tool_calls: tuple[Mapping[str, Any], ...] = ()
    """Tool calls made by the answer (JSON dicts)."""
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    """Host data that round-trips as JSON (read-only)."""

    def __post_init__(self) -> None:
        for name in ("content", "model", "finish_reason"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise InvalidInputError(
                    f"response.{name}", f"must be a string, got {type(value).__name__}", value=value
                )
        if not self.model.strip():
            raise InvalidInputError("response.model", "must be a non-empty model name", value=self.model)
        if not isinstance(self.usage, Usage):
            raise InvalidInputError(
                "response.usage", f"must be a Usage, got {type(self.usage).__name__}", fix="Usage(...)"
            )
        if isinstance(self.tool_calls, str | Mapping) or not isinstance(self.tool_calls, list | tuple):
            raise InvalidInputError("response.tool_calls", "must be a list of dicts", value=self.tool_calls)
        calls = tuple(self.tool_calls)
        for i, call in enumerate(calls):
            if not isinstance(call, Mapping):
                raise InvalidInputError(f"response.tool_calls[{i}]", "must be a dict", value=call)
        plain_json(calls, "response.tool_calls")
        if not isinstance(self.extra, Mapping):
            raise InvalidInputError("response.extra", "must be a dict of JSON values", value=self.extra)
        plain_json(self.extra, "response.extra")
        object.__setattr__(self, "tool_calls", calls)
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))

    @property
    def complete(self) -> bool:
        """True when the answer ended normally (not cut off, not an error, not a tool call)."""
        return self.finish_reason.casefold() in NORMAL_STOPS and not self.tool_calls

    @property
    def usage_known(self) -> bool:
        """False when the original call reported no usage (an estimated usage of no tokens at all,
        as the adapters store it): what a hit on it saves is then unknown, not zero."""
        u = self.usage
        return not (u.estimated and u.input_tokens + u.output_tokens + u.cache_read_tokens == 0)

    @property
    def is_tool_call(self) -> bool:
        """True when the answer calls tools."""
        return bool(self.tool_calls) or self.finish_reason.casefold() in TOOL_CALL_STOPS

    def to_json(self) -> dict[str, Any]:
        """The response as a plain JSON dict."""
        return {
            "content": self.content,
            "model": self.model,
            "usage": self.usage.as_dict(),
            "finish_reason": self.finish_reason,
            "tool_calls": plain_json(self.tool_calls, "tool_calls"),
            "extra": plain_json(self.extra, "extra"),
        }

    def dumps(self) -> str:
        """:meth:`to_json` as compact JSON text."""
        return canonical_json(self.to_json())

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> CachedResponse:
        """Read a response back from :meth:`to_json` (a dict) or its JSON text, field by field.

        Raises:
            InvalidInputError: The data is not a response written by :meth:`to_json`.
        """
        if isinstance(data, str | bytes):
            try:
                data = json.loads(data)
            except ValueError as e:
                raise InvalidInputError("response", "is not valid JSON") from e
        if not isinstance(data, Mapping):
            raise InvalidInputError("response", "must be a JSON object", value=type(data).__name__)
        usage = data.get("usage")
        if not isinstance(usage, Mapping) or not all(isinstance(k, str) for k in usage):
            raise InvalidInputError("response.usage", "must be a JSON object", value=usage)
        try:
            return cls(
                content=data.get("content"),  # type: ignore[arg-type]  # checked in __post_init__
                model=data.get("model"),  # type: ignore[arg-type]
                usage=Usage(**usage),
                finish_reason=data.get("finish_reason", "stop"),
                tool_calls=tuple(data.get("tool_calls") or ()),
                extra=data.get("extra") or {},
            )
        except TypeError as e:  # an unknown usage field
            raise InvalidInputError("response.usage", f"has unknown fields: {e}") from e


@dataclass(frozen=True, kw_only=True, slots=True)
class CacheHit:
    """A cached answer found for a request, with what a caller needs to audit it.

    In shadow mode ``served`` is False: the hit was logged, the caller must make the call.
    """

    response: CachedResponse
    """The cached answer."""
    kind: Literal["exact", "semantic"]
    """Which cache found it."""
    key: str
    """The entry's key (the request digest it was stored under)."""
    score: float
    """1.0 for an exact hit, the cosine similarity for a semantic one."""
    matched_prompt: str | None
    """Semantic: the stored prompt text (``None`` when prompts are stored hashed only)."""
    saved_usd: Decimal | None
    """What the hit saved, priced with ``cost_of`` (``None`` when the model has no known price or
    the original call reported no usage)."""
    saved_tokens: int | None
    """Input plus output tokens the original call used (``None`` when it reported no usage)."""
    served: bool = True
    """False in shadow mode: a would-be hit, logged and not served."""
