"""The ERROR ``CostEventHandler`` logs for a model the registry does not know names the step that
prices its calls.

It used to say "Register it (ledger.registry.register(...))": registering makes the model known
and prices nothing (its calls stay unpriced, and the ERROR is logged once per model, so nothing
says the fix did not work). What prices it is a price (``register_price`` with a
``PriceOverride``, or a ``[prices."name"]`` table). Real LlamaIndex dispatch, a ``MockLLM``
answering with OpenAI-style usage, a real ledger with its own registry and price table.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, LLMMetadata
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.llms import MockLLM
from llama_index.core.llms.callbacks import llm_chat_callback

from llamaindex_tokenbudget import CostEventHandler, cost_event_handler
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.price_overrides import PriceOverride, PriceTable, register_price
from tokenbudget_core.registry import ModelRegistry

MODEL = "acme-llm-7b"


class AcmeLLM(MockLLM):
    """A model no registry knows, answering with the usage an OpenAI-compatible server reports."""

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=MODEL, num_output=100, is_chat_model=True)

    @llm_chat_callback()
    def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        raw = {
            "object": "chat.completion",
            "model": MODEL,
            "usage": {"prompt_tokens": 1_000_000, "completion_tokens": 100_000},
        }
        return ChatResponse(message=ChatMessage(role="assistant", content="hi"), raw=raw)


@pytest.fixture
def ledger() -> Iterator[tuple[Ledger, PriceTable]]:
    prices = PriceTable()
    ledger = Ledger("memory://", registry=ModelRegistry(), prices=prices)
    handler = CostEventHandler(ledger=ledger, feature="docs")
    root = get_dispatcher()
    root.add_event_handler(handler)
    yield ledger, prices
    root.event_handlers.remove(handler)


def cost_and_unpriced(ledger: Ledger) -> tuple[int, int]:
    (row,) = ledger.store.rollup([ledger.day()])
    return int(row.values["cost_nanos"]), int(row.values["unpriced"])


def test_the_error_names_the_price_step_and_following_it_prices_the_calls(
    ledger: tuple[Ledger, PriceTable], caplog: pytest.LogCaptureFixture
) -> None:
    led, prices = ledger
    with caplog.at_level(logging.ERROR, logger=cost_event_handler.__name__):
        AcmeLLM().chat([ChatMessage(role="user", content="hello")])
    [logged] = caplog.records
    text = logged.getMessage()
    assert f"register_price({MODEL!r}, PriceOverride(" in text  # the step that prices it
    assert "TOKENBUDGET_PRICES" in text
    assert f"ledger.registry.register({MODEL!r}" in text  # and the one that makes it known
    assert cost_and_unpriced(led) == (0, 1)

    led.registry.register(MODEL, provider="openai")  # known now, but still no price
    AcmeLLM().chat([ChatMessage(role="user", content="hello")])
    assert cost_and_unpriced(led) == (0, 2)

    register_price(MODEL, PriceOverride(input_mtok="1", output_mtok="2"), table=prices)
    AcmeLLM().chat([ChatMessage(role="user", content="hello")])
    assert cost_and_unpriced(led) == (int(Decimal("1.2") * 10**9), 2)  # $1 input + $0.2 output
