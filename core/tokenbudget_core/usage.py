"""Token usage of one call (or a sum of calls), in one convention for every provider.

Convention (the same as OpenAI's and genai-prices'):

* ``input_tokens`` counts *all* input tokens, cache reads and cache writes included;
* ``cache_read_tokens`` and ``cache_write_tokens`` are parts of ``input_tokens``;
  ``cache_write_1h_tokens`` is the part of ``cache_write_tokens`` written with
  Anthropic's 1-hour TTL (priced higher than the 5-minute default);
* ``output_tokens`` counts all output tokens, ``reasoning_tokens`` included (they
  are billed as output).

Provider responses are converted by the ``from_*`` constructors (see
:mod:`tokenbudget_core.usage_sources`), which get each provider's semantics right.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from .errors import InvalidInputError

__all__ = ["Usage"]

_COUNT_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Usage:
    """Tokens used by one call, or accumulated over many.

    Example:
        >>> u = Usage(input_tokens=1200, output_tokens=300, cache_read_tokens=1000)
        >>> u.uncached_input_tokens
        200
        >>> (u + u).input_tokens
        2400

    Raises:
        InvalidInputError: A figure is negative, not an integer, or a part exceeds its whole.
    """

    input_tokens: int = 0
    """All input tokens, cache reads and writes included."""
    output_tokens: int = 0
    """All output tokens, reasoning tokens included."""
    cache_read_tokens: int = 0
    """Input tokens served from the provider's prompt cache (part of ``input_tokens``)."""
    cache_write_tokens: int = 0
    """Input tokens written to the provider's prompt cache, all TTLs (part of ``input_tokens``)."""
    cache_write_1h_tokens: int = 0
    """Cache writes with a 1-hour TTL (part of ``cache_write_tokens``)."""
    reasoning_tokens: int = 0
    """Hidden reasoning tokens (part of ``output_tokens``)."""
    requests: int = 1
    """Number of calls this usage covers."""
    estimated: bool = False
    """True when any figure is an estimate (e.g. a stream cut short before its usage arrived)."""

    def __post_init__(self) -> None:
        i, o, r, w = self.input_tokens, self.output_tokens, self.cache_read_tokens, self.cache_write_tokens
        w1, rs, n = self.cache_write_1h_tokens, self.reasoning_tokens, self.requests
        if (  # the common case, checked in one go (exact ints only: bools and subclasses go below)
            type(i) is int and type(o) is int and type(r) is int and type(w) is int
            and type(w1) is int and type(rs) is int and type(n) is int and type(self.estimated) is bool
            and r >= 0 and w >= 0 and r + w <= i and 0 <= w1 <= w and 0 <= rs <= o and n >= 0
        ):  # fmt: skip
            return
        for name in (*_COUNT_FIELDS, "requests"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidInputError(
                    f"usage.{name}", f"must be an integer, got {type(value).__name__}", value=value
                )
            if value < 0:
                raise InvalidInputError(f"usage.{name}", f"must be >= 0, got {value}", value=value)
            if type(value) is not int:  # an int subclass (a counter's TokenCount): kept as a plain int
                object.__setattr__(self, name, int(value))
        if not isinstance(self.estimated, bool):
            raise InvalidInputError("usage.estimated", "must be a bool", value=self.estimated)
        _part_of(self, "cache_read_tokens", "input_tokens", self.cache_read_tokens)
        _part_of(self, "cache_write_tokens", "input_tokens", self.cache_read_tokens + self.cache_write_tokens)
        _part_of(self, "cache_write_1h_tokens", "cache_write_tokens", self.cache_write_1h_tokens)
        _part_of(self, "reasoning_tokens", "output_tokens", self.reasoning_tokens)

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens

    @property
    def uncached_input_tokens(self) -> int:
        """Input tokens billed at the plain input price (neither read from nor written to a cache)."""
        return self.input_tokens - self.cache_read_tokens - self.cache_write_tokens

    def __add__(self, other: object) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        values: dict[str, Any] = {
            f.name: getattr(self, f.name) + getattr(other, f.name)
            for f in fields(self)
            if f.name != "estimated"
        }
        return Usage(**values, estimated=self.estimated or other.estimated)

    def __radd__(self, other: object) -> Usage:
        if other == 0:  # so sum(usages) works
            return self
        return NotImplemented

    def with_counted_input(self, counted: int) -> Usage:
        """This usage, or, when it reports no input tokens although ``counted`` were sent (a
        stream whose usage chunk lacks them, Ollama's prompt served from its cache), the same
        usage with the counted input, flagged estimated: a call is never charged as if its
        prompt were free.

        Raises:
            InvalidInputError: ``counted`` is not a non-negative integer.
        """
        if isinstance(counted, bool) or not isinstance(counted, int) or counted < 0:
            raise InvalidInputError("counted", "must be a non-negative number of tokens", value=counted)
        if self.input_tokens or not counted:
            return self
        return replace(self, input_tokens=counted, estimated=True)

    def as_dict(self) -> dict[str, int | bool]:
        """The figures as a plain dict (for JSON)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    # Constructors from provider and framework shapes; implemented in usage_sources.

    @classmethod
    def from_openai(cls, response: Any) -> Usage:
        """From an OpenAI Chat Completions response (SDK object or dict), or a stream chunk with usage.

        ``prompt_tokens`` already includes ``prompt_tokens_details.cached_tokens``.
        """
        from .usage_sources import usage_from_openai_chat

        return usage_from_openai_chat(response)

    @classmethod
    def from_openai_responses(cls, response: Any) -> Usage:
        """From an OpenAI Responses API response (SDK object or dict)."""
        from .usage_sources import usage_from_openai_responses

        return usage_from_openai_responses(response)

    @classmethod
    def from_anthropic(cls, response: Any) -> Usage:
        """From an Anthropic Messages response (SDK object or dict).

        Anthropic's ``input_tokens`` excludes cache reads and writes; they are added here.
        """
        from .usage_sources import usage_from_anthropic

        return usage_from_anthropic(response)

    @classmethod
    def from_langchain(cls, usage_metadata: Any) -> Usage:
        """From a LangChain ``AIMessage.usage_metadata`` dict."""
        from .usage_sources import usage_from_langchain

        return usage_from_langchain(usage_metadata)

    @classmethod
    def from_llamaindex(cls, raw: Any) -> Usage:
        """From a LlamaIndex ``ChatResponse.raw`` (the provider's response it wraps)."""
        from .usage_sources import usage_from_llamaindex

        return usage_from_llamaindex(raw)


def _part_of(u: Usage, part: str, whole: str, amount: int) -> None:
    if amount > getattr(u, whole):
        what = "cache_read_tokens + cache_write_tokens" if part == "cache_write_tokens" else part
        raise InvalidInputError(
            f"usage.{part}",
            f"{what} = {amount} exceeds {whole} = {getattr(u, whole)}",
            value=getattr(u, part),
            fix=f"cache and reasoning figures are parts of their total; pass the full figure in {whole}",
        )
