"""Estimated counts for models whose tokenizer is not available offline.

The estimate is the tiktoken count of the same request (cl100k framing: 3 tokens per
message plus the role, the tool definitions' JSON), times the model's learned
correction factor (:mod:`tokenbudget_core.calibration`). Every figure is flagged
``exact=False``. :class:`~tokenbudget_core.anthropic_counting.AnthropicTokenCounter`
falls back to this when Anthropic's counting API cannot be reached.

Images are priced by the model's family: Claude's rule for Claude models (a part of the
calibrated estimate), OpenAI's tile and patch rules for OpenAI models served elsewhere, Gemini's
258 tokens per 768 px tile (at least 1,120: Gemini 3's default) for Gemini models, and for any
other model the most any known rule charges for the image
(:func:`~tokenbudget_core.images.max_image_tokens`), so a budget check never under-counts.
Those OpenAI-rule and upper-bound figures are not scaled by the correction factor (a factor
below 1 would make the bound a guess), and a reported usage whose request holds an upper-bound
image teaches the factor nothing (the image's real share of it is unknown).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .calibration import Calibration, check_calibration
from .counting import TokenCount, TokenCounter, ToolLike, check_text, check_tools
from .encodings import get_encoding
from .errors import InvalidInputError
from .images import anthropic_image_tokens, gemini_image_tokens, max_image_tokens, openai_image_tokens
from .messages import ImagePart, MessageLike, TextPart, to_messages
from .registry import ModelInfo, family_provider

__all__ = ["EstimatingTokenCounter", "unknown_model_counter"]


class EstimatingTokenCounter(TokenCounter):
    """Estimates for providers that publish no tokenizer; every count has ``exact=False``.

    Args:
        model: The registry entry.
        calibration: Where the model's correction factor is learned (default: process-wide).

    Raises:
        InvalidInputError: ``model`` is not a ``ModelInfo``, or ``calibration`` is not a
            ``Calibration`` (or ``None``).

    Example:
        >>> counter = TokenCounter.for_model("gemini-2.5-pro")
        >>> counter.count("Hello there").exact
        False
    """

    counts_builtin_tools = True  # (their JSON, estimated like the rest)

    def __init__(self, model: ModelInfo, *, calibration: Calibration | None = None) -> None:
        super().__init__(model)
        self.calibration = check_calibration(calibration)
        self._enc = get_encoding(model.encoding or "cl100k_base")
        self._cache: dict[str, int] = {}
        family = family_provider(model.canonical) or family_provider(model.name)
        self._image_rule = (
            "anthropic"
            if model.provider == "anthropic" or family == "anthropic"
            else "openai"
            if model.provider == "openai" or family == "openai"
            else "gemini"
            if model.provider == "google" or model.canonical.lower().startswith("gemini")
            else "upper-bound"
        )
        """How images are priced: ``anthropic`` (calibrated with the text), ``openai`` (the
        model's own rule), ``gemini`` (:func:`~tokenbudget_core.images.gemini_image_tokens`) or
        ``upper-bound`` (:func:`~tokenbudget_core.images.max_image_tokens`)."""

    def _raw(self, text: str) -> int:
        n = self._cache.get(text)
        if n is None:
            n = len(self._enc.encode_ordinary(text))
            if len(self._cache) < 65_536:
                self._cache[text] = n
        return n

    def _result(self, raw: int, images: int = 0) -> TokenCount:
        return TokenCount(
            self.calibration.apply(self.model.canonical, raw) + images,
            exact=False,
            model=self.model.name,
            method="estimate",
            encoding=self._enc.name,
        )

    def _estimate(
        self, messages: Sequence[MessageLike], tools: Sequence[ToolLike] | None
    ) -> tuple[int, int, bool]:
        """``(raw, images, images_exact)``: the raw estimate the correction factor scales
        (text, framing, tools, and Claude-rule images), the tokens of the images priced by a rule
        the factor must not scale, and whether those all came from the model's own rule at a
        known size (``False`` when one is an upper bound)."""
        if isinstance(messages, str | bytes | Mapping) or not isinstance(messages, Sequence):
            raise InvalidInputError("messages", "expected a list of messages", value=messages)
        total = 3
        images = 0
        images_exact = True
        for m in to_messages(messages):
            total += 3 + self._raw(m.role)
            if isinstance(m.content, str):
                total += self._raw(m.content)
            else:
                for part in m.content:
                    if isinstance(part, TextPart):
                        total += self._raw(part.text)
                    elif isinstance(part, ImagePart):
                        if self._image_rule == "anthropic":
                            total += anthropic_image_tokens(part).tokens
                            continue
                        img = (
                            openai_image_tokens(part, self.model.canonical)
                            if self._image_rule == "openai"
                            else gemini_image_tokens(part)
                            if self._image_rule == "gemini"
                            else max_image_tokens(part)
                        )
                        images += img.tokens
                        images_exact = images_exact and img.exact
            if m.name:
                total += 1 + self._raw(m.name)
            for call in m.tool_calls:
                total += 3 + self._raw(call.name) + self._raw(call.arguments)
        for i, tool in enumerate(check_tools(tools)):
            total += 10 + self._raw(_tool_json(tool, i))
        return total, images, images_exact

    def raw_estimate_messages(
        self, messages: Sequence[MessageLike], tools: Sequence[ToolLike] | None = None
    ) -> int:
        """The uncorrected estimate: text, framing, tools and images, before the correction factor."""
        raw, images, _ = self._estimate(messages, tools)
        return raw + images

    def count_message(self, message: MessageLike) -> TokenCount:
        """Estimated tokens one message adds to a request (reply priming excluded)."""
        raw, images, _ = self._estimate([message], None)
        return self._result(raw - 3, images)

    def count(self, text: str) -> TokenCount:
        """Estimated tokens in ``text``."""
        return self._result(self._raw(check_text(text)))

    def count_messages(
        self, messages: Sequence[MessageLike], tools: Sequence[ToolLike] | None = None
    ) -> TokenCount:
        """Estimated input tokens of a chat request."""
        raw, images, _ = self._estimate(messages, tools)
        return self._result(raw, images)

    def observe(
        self,
        messages: Sequence[MessageLike],
        actual_input_tokens: int,
        tools: Sequence[ToolLike] | None = None,
    ) -> None:
        """Learn from the input tokens the provider reported for these messages.

        Images priced by OpenAI's rules are taken off the reported figure first; a request with
        an image priced by an upper bound teaches nothing (its real cost is unknown).
        """
        raw, images, images_exact = self._estimate(messages, tools)
        actual = actual_input_tokens
        if images and not isinstance(actual, bool) and isinstance(actual, int) and actual >= 0:
            if not images_exact or actual <= images:
                return
            actual -= images
        self.calibration.observe(self.model.canonical, estimated=raw, actual=actual)


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
