"""Read token usage and cost from LangChain results."""

from __future__ import annotations

from decimal import Decimal

from langchain_core.messages import AIMessage

from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.pricing import cost_of
from tokenbudget_core.response_cache import served_hit
from tokenbudget_core.usage import Usage

from .llm_cache import CACHE_HIT_KEY

__all__ = ["cost_of_message", "usage_of"]


def usage_of(message: AIMessage) -> Usage:
    """The :class:`~tokenbudget_core.usage.Usage` of a model reply (from ``usage_metadata``).

    A reply served from a response cache keeps the usage of the call that was cached (the hit
    itself used nothing: its :func:`cost_of_message` is 0).

    Raises:
        InvalidInputError: The reply carries no ``usage_metadata`` (for OpenAI streams,
            pass ``stream_usage=True`` to the chat model).
    """
    if not isinstance(message, AIMessage):
        raise InvalidInputError("message", f"expected an AIMessage, got {type(message).__name__}")
    if not message.usage_metadata:
        raise InvalidInputError(
            "message.usage_metadata",
            "is missing",
            fix="use a chat model that reports usage (for OpenAI streams pass stream_usage=True)",
        )
    return Usage.from_langchain(message.usage_metadata)


def cost_of_message(message: AIMessage, model: str | None = None) -> Decimal:
    """USD cost of a model reply; the model defaults to ``response_metadata['model_name']``.

    A reply served from a response cache (a :class:`~langchain_tokenbudget.TokenBudgetLLMCache`
    hit, marked in ``response_metadata["tokenbudget_cache"]``, or a hit of LangChain's own caches,
    whose ``usage_metadata`` reports ``total_cost`` 0) made no model call: it costs ``Decimal(0)``,
    as the ledger charges it, though its ``usage_metadata`` still shows the cached call's tokens.

    Raises:
        InvalidInputError: Not an ``AIMessage``; ``model`` given but not a non-empty name (only
            ``None`` means the reply's own model); or a reply of a model call with no usage, or no
            model name to price it with.
        UnpricedModelError: The model has no known price.
    """
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise InvalidInputError(
            "model",
            "must be a non-empty model name (or None for the one the reply names)",
            value=model,
            fix="pass model='gpt-4o', or leave it out",
        )
    if isinstance(message, AIMessage) and (
        served_hit(message.response_metadata.get(CACHE_HIT_KEY), message.usage_metadata) is not None
    ):
        return Decimal(0)
    usage = usage_of(message)  # validates the message first
    if model is not None:
        return cost_of(usage, model)
    name = message.response_metadata.get("model_name") or message.response_metadata.get("model")
    if not name:
        raise InvalidInputError("model", "the reply does not name its model", fix="pass model='...'")
    return cost_of(usage, str(name))
