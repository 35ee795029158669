"""Counting tokens before a call goes out.

:meth:`TokenCounter.for_model` picks the right counter for a model:

* OpenAI models: :class:`~tokenbudget_core.openai_counting.TiktokenCounter`, exact,
  with the chat-format overhead, tool definitions, tool calls and images;
* Anthropic models: :class:`~tokenbudget_core.anthropic_counting.AnthropicTokenCounter`,
  exact through the ``messages.count_tokens`` API, an estimate flagged
  ``exact=False`` when that API cannot be reached;
* other providers: :class:`~tokenbudget_core.estimating.EstimatingTokenCounter`,
  always flagged ``exact=False``.

Every count is a :class:`TokenCount`: an ``int`` that also says how it was obtained.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .errors import InvalidInputError
from .messages import MessageLike
from .registry import ModelInfo, ModelRegistry, default_registry

if TYPE_CHECKING:
    from .calibration import Calibration

__all__ = ["SupportsTokenCount", "TokenCount", "TokenCounter", "ToolLike", "resolve_counter"]

ToolLike = Mapping[str, Any]
"""A tool definition: OpenAI's ``{"type": "function", "function": {...}}`` or Anthropic's
``{"name", "description", "input_schema"}``."""


class TokenCount(int):
    """A token count that remembers how it was obtained.

    It is an ``int`` (compare it, add it, pass it anywhere an int goes) with:

    Attributes:
        exact: ``False`` when the figure is an estimate (provider API unreachable,
            a tokenizer nobody publishes, an image whose size is unknown).
        model: The model name the count is for.
        encoding: The tiktoken encoding used, if any.
        method: ``tiktoken``, ``anthropic-api`` or ``estimate``.
    """

    exact: bool
    model: str
    encoding: str | None
    method: str

    def __new__(
        cls, value: int, *, exact: bool, model: str, method: str, encoding: str | None = None
    ) -> TokenCount:
        obj = super().__new__(cls, value)
        obj.exact = exact
        obj.model = model
        obj.encoding = encoding
        obj.method = method
        return obj

    def __str__(self) -> str:
        return str(int(self))

    def __repr__(self) -> str:
        return f"TokenCount({int(self)}, exact={self.exact}, model={self.model!r}, method={self.method!r})"

    def as_dict(self) -> dict[str, Any]:
        """The count and how it was obtained, for JSON output."""
        return {
            "tokens": int(self),
            "exact": self.exact,
            "model": self.model,
            "encoding": self.encoding,
            "method": self.method,
        }


@runtime_checkable
class SupportsTokenCount(Protocol):
    """The injection seam for anything that counts tokens (memory, budgets, routers)."""

    def count(self, text: str) -> int:
        """Tokens in plain text."""
        ...

    def count_messages(self, messages: Sequence[MessageLike], tools: Sequence[ToolLike] | None = None) -> int:
        """Tokens a chat request with these messages (and tools) consumes as input."""
        ...


class TokenCounter(abc.ABC):
    """Base class of the per-provider counters. Use :meth:`for_model` to get one.

    Example:
        >>> counter = TokenCounter.for_model("gpt-4o")
        >>> counter.count("Hello, world!")
        TokenCount(4, exact=True, model='gpt-4o', method='tiktoken')
        >>> int(counter.count_messages([{"role": "user", "content": "Hello"}]))
        8
    """

    def __init__(self, model: ModelInfo) -> None:
        self.model = model

    @classmethod
    def for_model(
        cls,
        model: str,
        *,
        fallback: str | None = None,
        registry: ModelRegistry | None = None,
        anthropic_client: Any = None,
        anthropic_async_client: Any = None,
        timeout: float = 5.0,
        calibration: Calibration | None = None,
    ) -> TokenCounter:
        """Return the counter for ``model``.

        Args:
            model: A model name (``gpt-4o``, ``claude-sonnet-4-5-20250929``, ``openai/gpt-4.1``...).
            fallback: A known model to count with, on purpose, when ``model`` is unknown.
            registry: The model registry (default: the process-wide one).
            anthropic_client: An ``anthropic.Anthropic`` client for exact Claude counts;
                by default one is made when ``ANTHROPIC_API_KEY`` is set.
            anthropic_async_client: An ``anthropic.AsyncAnthropic`` client for the async twins.
            timeout: Seconds to wait for a provider's counting API before estimating.
            calibration: Where estimate correction factors are learned (default: process-wide).

        Raises:
            UnknownModelError: ``model`` is unknown and no ``fallback`` was given.
            InvalidInputError: ``timeout`` is not a positive number.
        """
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise InvalidInputError("timeout", "must be a positive number of seconds", value=timeout)
        info = (registry or default_registry()).get(model, fallback=fallback)
        if info.tokenizer == "tiktoken":
            from .openai_counting import TiktokenCounter

            return TiktokenCounter(info)
        if info.tokenizer == "anthropic":
            from .anthropic_counting import AnthropicTokenCounter

            return AnthropicTokenCounter(
                info,
                client=anthropic_client,
                async_client=anthropic_async_client,
                timeout=timeout,
                calibration=calibration,
            )
        from .estimating import EstimatingTokenCounter

        return EstimatingTokenCounter(info, calibration=calibration)

    @property
    def name(self) -> str:
        """The model name this counter counts for."""
        return self.model.name

    @abc.abstractmethod
    def count(self, text: str) -> TokenCount:
        """Tokens in plain text (no chat framing).

        Raises:
            InvalidInputError: ``text`` is not a string.
        """

    @abc.abstractmethod
    def count_messages(
        self, messages: Sequence[MessageLike], tools: Sequence[ToolLike] | None = None
    ) -> TokenCount:
        """Input tokens of a chat request with these messages and tool definitions.

        Args:
            messages: OpenAI-style dicts or :class:`~tokenbudget_core.messages.Message` objects.
            tools: Tool definitions, OpenAI or Anthropic style.

        Raises:
            InvalidMessageError: A message is malformed; the error names it (``messages[3].role``).
        """

    @property
    def reply_priming(self) -> int:
        """Tokens a chat request costs once, on top of its messages (OpenAI: 3)."""
        return 3

    @abc.abstractmethod
    def count_message(self, message: MessageLike) -> TokenCount:
        """Tokens one message adds to a request: framing included, reply priming excluded.

        This is what memory and fitting sum per message (cached, so a growing history is
        never re-tokenised). For Claude it is the calibrated estimate (``exact=False``):
        a per-message API call would cost more than it saves.

        Raises:
            InvalidMessageError: The message is malformed.
        """

    async def acount(self, text: str) -> TokenCount:
        """Async twin of :meth:`count`."""
        return self.count(text)

    async def acount_messages(
        self, messages: Sequence[MessageLike], tools: Sequence[ToolLike] | None = None
    ) -> TokenCount:
        """Async twin of :meth:`count_messages`."""
        return self.count_messages(messages, tools)


def resolve_counter(model: str | TokenCounter) -> TokenCounter:
    """A counter from a model name, or the counter itself.

    Raises:
        InvalidInputError: ``model`` is neither.
        UnknownModelError: The model name is unknown.
    """
    if isinstance(model, TokenCounter):
        return model
    if isinstance(model, str):
        return TokenCounter.for_model(model)
    raise InvalidInputError("model", "must be a model name or a TokenCounter", value=model)


def check_text(text: object, field: str = "text") -> str:
    """Validate that ``text`` is a string (shared by the counters)."""
    if not isinstance(text, str):
        raise InvalidInputError(
            field,
            f"must be a string, got {type(text).__name__}",
            value=text,
            fix="convert it with str() first",
        )
    return text


def check_tools(tools: object) -> list[ToolLike]:
    """Validate a tools argument: ``None`` or a list of dicts."""
    if tools is None:
        return []
    if isinstance(tools, str | bytes | Mapping) or not isinstance(tools, Iterable):
        raise InvalidInputError("tools", "must be a list of tool definitions", value=tools)
    out: list[ToolLike] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping):
            raise InvalidInputError(f"tools[{i}]", "a tool definition must be a dict", value=tool)
        out.append(tool)
    return out
