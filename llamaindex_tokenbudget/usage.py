"""Read token usage and cost from LlamaIndex chat responses."""

from __future__ import annotations

from decimal import Decimal

from llama_index.core.base.llms.types import ChatResponse, CompletionResponse

from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.pricing import cost_of
from tokenbudget_core.response_cache import served_hit
from tokenbudget_core.usage import Usage

CACHE_HIT_KEY = "cache_hit"
"""Where :class:`~llamaindex_tokenbudget.CachedLLM` puts a served hit's audit: the response's
``additional_kwargs``."""

__all__ = ["cost_of_response", "usage_of"]


def usage_of(response: ChatResponse | CompletionResponse) -> Usage:
    """The :class:`~tokenbudget_core.usage.Usage` of a LlamaIndex response, read from ``response.raw``.

    ``raw`` is read as the integration keeps it
    (:func:`~tokenbudget_core.usage_sources.usage_from_llamaindex`): OpenAI (Chat Completions
    and Responses), Anthropic, Google GenAI (``usage_metadata``: Gemini's thinking tokens are
    output), Bedrock Converse (``usage.inputTokens`` / ``outputTokens``, cache reads and writes
    added to the input) and Ollama (``prompt_eval_count`` / ``eval_count``).

    Raises:
        InvalidInputError: The response has no raw provider payload with usage (a cache hit has
            none: it made no model call, and :func:`cost_of_response` answers 0 for it).
    """
    if not isinstance(response, ChatResponse | CompletionResponse):
        raise InvalidInputError("response", f"expected a ChatResponse, got {type(response).__name__}")
    if response.raw is None:
        if _hit(response):
            raise InvalidInputError(
                "response.raw",
                "is empty: the response was served from a response cache (additional_kwargs['cache_hit']) "
                "and made no model call",
                fix="read its cost with cost_of_response() (0), or what it saved in "
                "additional_kwargs['cache_hit']['saved_usd']",
            )
        raise InvalidInputError(
            "response.raw", "is empty", fix="use an LLM integration that keeps the provider response in .raw"
        )
    return Usage.from_llamaindex(response.raw)


def cost_of_response(response: ChatResponse | CompletionResponse, model: str | None = None) -> Decimal:
    """USD cost of a response; the model defaults to the one named in ``response.raw``.

    A response a :class:`~llamaindex_tokenbudget.CachedLLM` served from its cache (marked in
    ``additional_kwargs["cache_hit"]``) made no model call: it costs ``Decimal(0)``, as the ledger
    charges it.

    Raises:
        InvalidInputError: Not a response; ``model`` given but not a non-empty name (only
            ``None`` means the response's own model); or a response of a model call with no usage,
            or no model name to price it with.
        UnpricedModelError: The model has no known price.
    """
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise InvalidInputError(
            "model",
            "must be a non-empty model name (or None for the one the response names)",
            value=model,
            fix="pass model='gpt-4o', or leave it out",
        )
    if isinstance(response, ChatResponse | CompletionResponse) and _hit(response):
        return Decimal(0)
    usage = usage_of(response)  # validates the response first
    raw = response.raw
    if model is not None:
        return cost_of(usage, model)
    name = raw.get("model") if isinstance(raw, dict) else getattr(raw, "model", None)
    if not name:
        raise InvalidInputError("model", "the response does not name its model", fix="pass model='...'")
    return cost_of(usage, str(name))


def _hit(response: ChatResponse | CompletionResponse) -> bool:
    """The response was served from a response cache (the core's rule, on CachedLLM's mark)."""
    kwargs = response.additional_kwargs
    return served_hit(kwargs.get(CACHE_HIT_KEY) if isinstance(kwargs, dict) else None) is not None
