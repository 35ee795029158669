"""Estimated counts for models whose tokenizer is not available offline.

The estimate is the tiktoken count of the same request (cl100k framing: 3 tokens per
message plus the role, the tool definitions' JSON), times the model's learned
correction factor (:mod:`tokenbudget_core.calibration`). Every figure is flagged
``exact=False``. :class:`~tokenbudget_core.anthropic_counting.AnthropicTokenCounter`
falls back to this when Anthropic's counting API cannot be reached.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .calibration import Calibration, default_calibration
from .counting import TokenCount, TokenCounter, ToolLike, check_text, check_tools
from .encodings import get_encoding
from .errors import InvalidInputError
from .images import anthropic_image_tokens
from .messages import ImagePart, MessageLike, TextPart, to_messages
from .registry import ModelInfo

__all__ = ["EstimatingTokenCounter", "unknown_model_counter"]


class EstimatingTokenCounter(TokenCounter):
    """Estimates for providers that publish no tokenizer; every count has ``exact=False``.

    Args:
        model: The registry entry.
        calibration: Where the model's correction factor is learned (default: process-wide).

    Example:
        >>> counter = TokenCounter.for_model("gemini-2.5-pro")
        >>> counter.count("Hello there").exact
        False
    """

    counts_builtin_tools = True  # (their JSON, estimated like the rest)

    def __init__(self, model: ModelInfo, *, calibration: Calibration | None = None) -> None:
        super().__init__(model)
        self.calibration = calibration or default_calibration()
        self._enc = get_encoding(model.encoding or "cl100k_base")
        self._cache: dict[str, int] = {}

    def _raw(self, text: str) -> int:
        n = self._cache.get(text)
        if n is None:
            n = len(self._enc.encode_ordinary(text))
            if len(self._cache) < 65_536:
                self._cache[text] = n
        return n

    def _result(self, raw: int) -> TokenCount:
        return TokenCount(
            self.calibration.apply(self.model.canonical, raw),
            exact=False,
            model=self.model.name,
            method="estimate",
            encoding=self._enc.name,
        )

    def raw_estimate_messages(
        self, messages: Sequence[MessageLike], tools: Sequence[ToolLike] | None = None
    ) -> int:
        """The uncorrected estimate (what :meth:`observe` compares reported usage with)."""
        if isinstance(messages, str | bytes | Mapping) or not isinstance(messages, Sequence):
            raise InvalidInputError("messages", "expected a list of messages", value=messages)
        total = 3
        for m in to_messages(messages):
            total += 3 + self._raw(m.role)
            if isinstance(m.content, str):
                total += self._raw(m.content)
            else:
                for part in m.content:
                    if isinstance(part, TextPart):
                        total += self._raw(part.text)
                    elif isinstance(part, ImagePart):
                        total += anthropic_image_tokens(part).tokens
            if m.name:
                total += 1 + self._raw(m.name)
            for call in m.tool_calls:
                total += 3 + self._raw(call.name) + self._raw(call.arguments)
        for i, tool in enumerate(check_tools(tools)):
            total += 10 + self._raw(_tool_json(tool, i))
        return total

    def count_message(self, message: MessageLike) -> TokenCount:
        """Estimated tokens one message adds to a request (reply priming excluded)."""
        return self._result(self.raw_estimate_messages([message]) - 3)

    def count(self, text: str) -> TokenCount:
        """Estimated tokens in ``text``."""
        return self._result(self._raw(check_text(text)))

    def count_messages(
        self, messages: Sequence[MessageLike], tools: Sequence[ToolLike] | None = None
    ) -> TokenCount:
        """Estimated input tokens of a chat request."""
        return self._result(self.raw_estimate_messages(messages, tools))

    def observe(
        self,
        messages: Sequence[MessageLike],
        actual_input_tokens: int,
        tools: Sequence[ToolLike] | None = None,
    ) -> None:
        """Learn from the input tokens the provider reported for these messages."""
        self.calibration.observe(
            self.model.canonical,
            estimated=self.raw_estimate_messages(messages, tools),
            actual=actual_input_tokens,
        )


def _tool_json(tool: ToolLike, i: int) -> str:
    """A tool's JSON for the estimate: keys sorted, values that are not JSON as their ``str()``.
    Keys of mixed types (``1`` and ``"x"``) cannot be sorted as they are: they are sorted as
    the strings JSON makes of them.

    Raises:
        InvalidInputError: A key JSON has no form for (a tuple...) or a circular reference.
    """
    try:
        return json.dumps(tool, sort_keys=True, separators=(",", ":"), default=str)
    except (TypeError, ValueError, RecursionError):
        pass  # only now pay for a second try, keys as JSON strings
    try:
        return json.dumps(json_keys(tool), sort_keys=True, separators=(",", ":"), default=str)
    except (TypeError, ValueError, RecursionError) as e:
        raise not_json(f"tools[{i}]", tool, e) from e


def not_json(field: str, value: object, e: BaseException) -> InvalidInputError:
    """The error for a tool schema that is not JSON (shared by the counters)."""
    return InvalidInputError(
        field,
        f"is not JSON ({type(e).__name__}: {e})",
        value=value,
        fix="tool schemas must be JSON: strings, numbers, booleans, None, lists and dicts with "
        "string keys (an Enum's .value, a list instead of a set)",
    )


def json_keys(value: Any) -> Any:
    """``value`` with the dict keys JSON turns into strings (int, float, bool, None) turned into
    those strings, in nested dicts and lists too, so the keys can be sorted; other keys stay."""
    if isinstance(value, Mapping):
        return {_json_key(k): json_keys(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_keys(v) for v in value]
    return value


def _json_key(key: object) -> object:
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, bool | float):
        return json.dumps(key)  # null, true, 1.5: as json.dumps writes such keys
    if isinstance(key, int):
        return str(int(key))
    return key  # not a JSON key: json.dumps raises on it


def unknown_model_counter(name: str) -> EstimatingTokenCounter:
    """An estimating counter for a model no registry knows, for usage that has to be recorded
    anyway (an after-the-fact event handler cannot refuse the call): the ``cl100k_base`` estimate,
    every count ``exact=False``. Counting *before* a call never uses it: there an unknown model
    is an :class:`~tokenbudget_core.errors.UnknownModelError` unless the caller names a fallback.

    Raises:
        InvalidInputError: ``name`` is not a non-empty string.
    """
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError("model", "must be a non-empty model name", value=name)
    info = ModelInfo(
        name=name, canonical=name, provider="unknown", tokenizer="estimate", encoding="cl100k_base",
        fallback_for=name,
    )  # fmt: skip
    return EstimatingTokenCounter(info)
