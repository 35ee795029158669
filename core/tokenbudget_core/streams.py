"""Token usage of streamed replies: exact when the provider reports it, estimated when not.

Feed every chunk (OpenAI) or raw event (Anthropic) of a stream to an accumulator,
then ask it for the :class:`~tokenbudget_core.usage.Usage`:

* **OpenAI** reports usage in a stream only with ``stream_options={"include_usage":
  True}``: the last chunk has empty ``choices`` and a ``usage``, which is used as is.
* **Anthropic** reports input and cache figures in ``message_start`` and a *running
  total* of output tokens in each ``message_delta`` (newer API versions also repeat
  cumulative input and cache figures there). The latest figures win; deltas are
  never summed.

When a stream ends without its usage (usage not requested, or the connection cut
short) the result is an estimate flagged ``estimated=True``: output tokens are the
collected text counted by ``counter`` (anything with ``count(text) -> int``, such as
a :class:`~tokenbudget_core.counting.TokenCounter`) or, without one, roughly one token
per four characters (``ceil(len(text) / 4)``), and input tokens are the
``prompt_tokens_estimate`` you pass (count the prompt before sending it).

Example:
    >>> acc = OpenAIStreamUsage()
    >>> acc.add({"choices": [{"index": 0, "delta": {"content": "Hello there"}}]})
    >>> acc.add({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2}})
    >>> acc.result().output_tokens
    2
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from typing import Any, Protocol, TypeVar, cast

from .errors import InvalidInputError
from .usage import Usage
from .usage_sources import anthropic_usage, as_dict, count_field, openai_chat_usage

__all__ = [
    "AnthropicStreamUsage",
    "OpenAIStreamUsage",
    "TextCounter",
    "cut_off_usage",
    "estimate_output_tokens",
]

T = TypeVar("T")

_USED_EVENTS = frozenset({"message_start", "message_delta", "content_block_start", "content_block_delta"})
_CUMULATIVE_KEYS = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens", "output_tokens")


class TextCounter(Protocol):
    """Anything that counts the tokens of a text (a ``TokenCounter`` is one)."""

    def count(self, text: str) -> int:
        """Tokens in ``text``."""
        ...


def text_counter(counter: object) -> TextCounter | None:
    """``counter`` as a counter: a model name becomes its ``TokenCounter`` (``str.count`` would
    count a substring), ``None`` stays ``None``.

    Raises:
        InvalidInputError: Neither a counter (with ``count(text)``) nor a model name (a ``list``,
            ``tuple`` or ``bytes`` has a ``count`` method but is not a counter).
        UnknownModelError: A model name the registry does not know.
    """
    if counter is None:
        return None
    from .counting import as_counter

    return cast(TextCounter, as_counter(counter))


def estimate_output_tokens(text: str, *, counter: TextCounter | str | None = None) -> int:
    """Tokens of streamed text: ``counter.count_output(text)`` (a ``TokenCounter``; else
    ``counter.count(text)``), or ``ceil(len(text) / 4)`` without a counter.

    Args:
        text: The text.
        counter: A counter (anything with ``count(text)``, such as a ``TokenCounter``), or a
            model name whose counter counts it.

    Raises:
        InvalidInputError: ``text`` is not a string, ``counter`` is neither a counter nor a model
            name, or the counter returned something other than a non-negative int.
        UnknownModelError: ``counter`` names a model the registry does not know.
    """
    if not isinstance(text, str):
        raise InvalidInputError("text", f"must be a string, got {type(text).__name__}", value=text)
    counter = text_counter(counter)
    if counter is None:
        return -(-len(text) // 4)
    from .counting import TokenCounter, counted

    # output is the text alone: a counter that frames text as a message (Claude's) says so
    n = counter.count_output(text) if isinstance(counter, TokenCounter) else counter.count(text)
    return counted(n, counter)


def cut_off_usage(
    input_tokens: int, reply_text: str = "", *, counter: TextCounter | str | None = None
) -> Usage:
    """What a call the provider billed but reported no usage for is charged (cut off once its
    request went out: a read timeout, a stream broken off, a task cancelled): its counted input
    plus ``reply_text`` (what it streamed) counted by ``counter``, flagged ``estimated``. The
    one rule :meth:`~tokenbudget_core.ledger.Ledger.settle` and the adapters charging a failed
    attempt of their own apply.

    Raises:
        InvalidInputError: ``input_tokens`` is not a non-negative int, or as
            :func:`estimate_output_tokens` raises.

    Example:
        >>> cut_off_usage(120, "Hello th", counter=None).output_tokens
        2
    """
    if isinstance(input_tokens, bool) or not isinstance(input_tokens, int) or input_tokens < 0:
        raise InvalidInputError("input_tokens", "must be a non-negative int", value=input_tokens)
    out = estimate_output_tokens(reply_text, counter=counter) if reply_text else 0
    return Usage(input_tokens=int(input_tokens), output_tokens=out, estimated=True)


def _check_estimate(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError("prompt_tokens_estimate", "must be a non-negative int", value=value)
    return value


class _StreamUsage(abc.ABC):
    """What both accumulators share: collected text and pass-through wrappers."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self.items = 0
        """How many chunks or events were added."""

    @abc.abstractmethod
    def add(self, item: Any) -> None:
        """Account for one chunk or event."""

    @property
    def text(self) -> str:
        """All text collected from the deltas so far (content, tool arguments, reasoning)."""
        return "".join(self._parts)

    def _collect(self, value: object) -> None:
        if isinstance(value, str) and value:
            self._parts.append(value)

    def wrap(self, stream: Iterable[T]) -> Iterator[T]:
        """Yield each item of ``stream`` unchanged, adding it first.

        Example:
            >>> acc = OpenAIStreamUsage()
            >>> [c["choices"][0]["delta"]["content"] for c in acc.wrap(
            ...     [{"choices": [{"delta": {"content": "Hi"}}]}])]
            ['Hi']
            >>> acc.text
            'Hi'
        """
        for item in stream:
            self.add(item)
            yield item

    async def awrap(self, stream: AsyncIterable[T]) -> AsyncIterator[T]:
        """Async twin of :meth:`wrap`."""
        async for item in stream:
            self.add(item)
            yield item


class OpenAIStreamUsage(_StreamUsage):
    """Accumulates the usage of an OpenAI Chat Completions stream.

    Pass ``stream_options={"include_usage": True}`` to get exact figures; without it
    (or when the stream is cut short) :meth:`result` estimates.

    Example:
        >>> acc = OpenAIStreamUsage()
        >>> for chunk in [{"choices": [{"index": 0, "delta": {"content": "Hello, world"}}]}]:
        ...     acc.add(chunk)
        >>> u = acc.result(prompt_tokens_estimate=12)
        >>> (u.input_tokens, u.output_tokens, u.estimated)
        (12, 3, True)
    """

    def __init__(self) -> None:
        super().__init__()
        self._usage: Usage | None = None

    @property
    def exact(self) -> bool:
        """True once a chunk carrying usage has arrived."""
        return self._usage is not None

    def add(self, chunk: Any) -> None:
        """Account for one ``chat.completion.chunk`` (SDK object or dict).

        Raises:
            InvalidInputError: The chunk is not a chunk, or its usage is malformed.
        """
        data = as_dict(chunk, "chunk")
        self.items += 1
        if data.get("usage") is not None:
            self._usage = openai_chat_usage(data, "chunk")  # the latest report wins
        choices = data.get("choices") or []
        if not isinstance(choices, list):
            raise InvalidInputError("chunk.choices", "must be a list", value=choices)
        for i, choice in enumerate(choices):
            delta = as_dict(choice, f"chunk.choices[{i}]").get("delta")
            if delta is None:
                continue
            d = as_dict(delta, f"chunk.choices[{i}].delta")
            for key in ("content", "refusal", "reasoning_content"):
                self._collect(d.get(key))
            calls = [*(d.get("tool_calls") or []), *([d["function_call"]] if d.get("function_call") else [])]
            for j, call in enumerate(calls):
                c = as_dict(call, f"chunk.choices[{i}].delta.tool_calls[{j}]")
                fn = c.get("function", c)  # legacy function_call has name/arguments at the top
                f = as_dict(fn, f"chunk.choices[{i}].delta.tool_calls[{j}].function") if fn else {}
                self._collect(f.get("name"))
                self._collect(f.get("arguments"))

    def result(
        self, *, prompt_tokens_estimate: int | None = None, counter: TextCounter | str | None = None
    ) -> Usage:
        """The stream's usage: the provider's when it reported one, else an estimate.

        Args:
            prompt_tokens_estimate: Input tokens to assume when the stream carried no
                usage (required then; count the prompt before sending it).
            counter: Counts the collected text for the output estimate (a counter or a model
                name); without it, ``ceil(len(text) / 4)``.

        Raises:
            InvalidInputError: No usage arrived and ``prompt_tokens_estimate`` is missing.
        """
        if self._usage is not None:
            return self._usage
        if prompt_tokens_estimate is None:
            raise InvalidInputError(
                "prompt_tokens_estimate",
                "is required: the stream ended without a usage chunk",
                fix='request stream_options={"include_usage": True}, or count the prompt and pass it',
            )
        return Usage(
            input_tokens=_check_estimate(prompt_tokens_estimate),
            output_tokens=estimate_output_tokens(self.text, counter=counter),
            estimated=True,
        )


class AnthropicStreamUsage(_StreamUsage):
    """Accumulates the usage of an Anthropic Messages stream from its raw events.

    Works with ``messages.create(stream=True)`` and with the events of
    ``messages.stream()`` (its derived ``text`` / ``input_json`` events are ignored so
    nothing is counted twice).

    Example:
        >>> acc = AnthropicStreamUsage()
        >>> acc.add({"type": "message_start", "message": {"usage": {"input_tokens": 10,
        ...     "cache_read_input_tokens": 90, "output_tokens": 1}}})
        >>> acc.add({"type": "message_delta", "usage": {"output_tokens": 7}})
        >>> acc.add({"type": "message_delta", "usage": {"output_tokens": 12}})
        >>> u = acc.result()
        >>> (u.input_tokens, u.cache_read_tokens, u.output_tokens)
        (100, 90, 12)
    """

    def __init__(self) -> None:
        super().__init__()
        self._start: dict[str, Any] | None = None
        self._delta: dict[str, Any] | None = None

    @property
    def exact(self) -> bool:
        """True once both ``message_start`` and a ``message_delta`` have arrived."""
        return self._start is not None and self._delta is not None

    def add(self, event: Any) -> None:
        """Account for one stream event (SDK object or dict); unknown event types are ignored.

        Raises:
            InvalidInputError: A usage-carrying event is malformed.
        """
        self.items += 1
        kind = event.get("type") if isinstance(event, Mapping) else getattr(event, "type", None)
        if kind not in _USED_EVENTS:
            return  # ping, content_block_stop, message_stop, the helper's text events...
        data = as_dict(event, "event")
        if kind == "message_start":
            message = as_dict(data.get("message") or {}, "message_start.message")
            where = "message_start.message.usage"
            usage = as_dict(message.get("usage") or {}, where)
            anthropic_usage(usage, where)  # validate now, so the error points at this event
            self._start = usage
        elif kind == "message_delta":
            where = "message_delta.usage"
            usage = as_dict(data.get("usage") or {}, where)
            for key in _CUMULATIVE_KEYS:
                count_field(usage, key, where, required=key == "output_tokens")
            self._delta = usage  # a running total: replace, never add
        elif kind == "content_block_start":
            block = as_dict(data.get("content_block") or {}, "content_block_start.content_block")
            for key in ("text", "thinking", "name"):
                self._collect(block.get(key))
        elif kind == "content_block_delta":
            delta = as_dict(data.get("delta") or {}, "content_block_delta.delta")
            for key in ("text", "partial_json", "thinking"):
                self._collect(delta.get(key))

    def result(
        self, *, prompt_tokens_estimate: int | None = None, counter: TextCounter | str | None = None
    ) -> Usage:
        """The stream's usage; estimated (``estimated=True``) when it was cut short.

        Without a ``message_delta`` the output is the larger of ``message_start``'s
        ``output_tokens`` and the collected text's estimate.

        Args:
            prompt_tokens_estimate: Input tokens to assume when no input figure arrived
                (no ``message_start``, and no ``message_delta`` repeating ``input_tokens``).
            counter: Counts the collected text for the output estimate (a counter or a model
                name); without it, ``ceil(len(text) / 4)``.

        Raises:
            InvalidInputError: No input figure arrived and ``prompt_tokens_estimate`` is missing.
        """
        merged: dict[str, Any] = dict(self._start or {})
        if self._delta is not None:
            merged.update({k: v for k, v in self._delta.items() if v is not None})
        estimated = False
        if merged.get("input_tokens") is None:
            if prompt_tokens_estimate is None:
                raise InvalidInputError(
                    "prompt_tokens_estimate",
                    "is required: no message_start event arrived, so input tokens are unknown",
                    fix="count the prompt before sending it and pass the count",
                )
            merged["input_tokens"] = _check_estimate(prompt_tokens_estimate)
            estimated = True
        if self._delta is None:
            guess = estimate_output_tokens(self.text, counter=counter)
            merged["output_tokens"] = max(guess, count_field(merged, "output_tokens", "message_start"))
            estimated = True
        usage = anthropic_usage(merged, "stream.usage")
        return dataclasses.replace(usage, estimated=True) if estimated else usage
