"""Read token usage and cost from LangChain results."""

from __future__ import annotations

from decimal import Decimal

from langchain_core.messages import AIMessage

from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.pricing import cost_of
from tokenbudget_core.usage import Usage

__all__ = ["cost_of_message", "usage_of"]


def usage_of(message: AIMessage) -> Usage:
    """The :class:`~tokenbudget_core.usage.Usage` of a model reply (from ``usage_metadata``).

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

    Raises:
        InvalidInputError: No usage, or no model name to price it with.
        UnpricedModelError: The model has no known price.
    """
    usage = usage_of(message)  # validates the message first
    name = model or message.response_metadata.get("model_name") or message.response_metadata.get("model")
    if not name:
        raise InvalidInputError("model", "the reply does not name its model", fix="pass model='...'")
    return cost_of(usage, str(name))
