"""Read token usage and cost from LlamaIndex chat responses."""

from __future__ import annotations

from decimal import Decimal

from llama_index.core.base.llms.types import ChatResponse, CompletionResponse

from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.pricing import cost_of
from tokenbudget_core.usage import Usage

__all__ = ["cost_of_response", "usage_of"]


def usage_of(response: ChatResponse | CompletionResponse) -> Usage:
    """The :class:`~tokenbudget_core.usage.Usage` of a LlamaIndex response, read from ``response.raw``.

    Raises:
        InvalidInputError: The response has no raw provider payload with usage.
    """
    if not isinstance(response, ChatResponse | CompletionResponse):
        raise InvalidInputError("response", f"expected a ChatResponse, got {type(response).__name__}")
    if response.raw is None:
        raise InvalidInputError(
            "response.raw", "is empty", fix="use an LLM integration that keeps the provider response in .raw"
        )
    return Usage.from_llamaindex(response.raw)


def cost_of_response(response: ChatResponse | CompletionResponse, model: str | None = None) -> Decimal:
    """USD cost of a response; the model defaults to the one named in ``response.raw``.

    Raises:
        InvalidInputError: No usage, or no model name to price it with.
        UnpricedModelError: The model has no known price.
    """
    usage = usage_of(response)  # validates the response first
    raw = response.raw
    name = model or (raw.get("model") if isinstance(raw, dict) else getattr(raw, "model", None))
    if not name:
        raise InvalidInputError("model", "the response does not name its model", fix="pass model='...'")
    return cost_of(usage, str(name))
