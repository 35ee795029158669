"""A ``CachedLLM`` hit behind a ``StructuredLLM`` costs nothing (review s22c #6): the
``StructuredLLM``'s own event, whose inner call the cache answered, is not charged as an
estimated provider call; the hit is recorded on the payer, as a direct ``CachedLLM`` hit is.

Real LlamaIndex wrappers, ``StructuredLLM`` and ``CachedLLM`` over an ``ExactCache`` recording
on the ledger; the model is the JSON-answering ``CustomLLM`` of ``test_llamaindex_structured_llm``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from llama_index.core import Settings
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.callbacks import CallbackManager
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.llms import LLM
from test_llamaindex_structured_llm import MODEL, JsonChat, Person

from llamaindex_tokenbudget import BudgetCallbackHandler, CachedLLM, CostEventHandler
from tokenbudget_core import attribute
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.response_cache import ExactCache

MESSAGES = [ChatMessage(role="user", content="Give me a person")]


@pytest.fixture
def settings_manager() -> Iterator[None]:
    before = Settings._callback_manager
    try:
        yield
    finally:
        Settings._callback_manager = before


def call(llm: LLM, how: str) -> None:
    if how == "chat":
        llm.chat(MESSAGES)
    elif how == "stream_chat":
        *_, _last = llm.stream_chat(MESSAGES)
    elif how == "complete":
        llm.complete("Give me a person")
    elif how == "achat":
        asyncio.run(llm.achat(MESSAGES))
    else:

        async def read() -> None:
            async for _ in await llm.astream_chat(MESSAGES):
                pass

        asyncio.run(read())


def rows(ledger: Ledger) -> dict[str, dict[str, Any]]:
    keep = ("requests", "cost_nanos", "estimated", "cache_hits")
    return {
        r.rollup_key: {k: int(r.values.get(k, 0)) for k in keep} for r in ledger.store.rollup([ledger.day()])
    }


@pytest.mark.filterwarnings("ignore:The `json` method is deprecated")  # StructuredLLM.stream_chat's own
@pytest.mark.parametrize("how", ["chat", "stream_chat", "complete", "achat", "astream_chat"])
def test_a_hit_behind_a_structured_llm_costs_nothing_and_is_a_hit(settings_manager: None, how: str) -> None:
    ledger = Ledger("memory://", policy=BudgetPolicy(daily_usd=Decimal("1")))
    Settings.callback_manager = CallbackManager([BudgetCallbackHandler(ledger, feature="app")])
    inner = BudgetCallbackHandler(ledger, feature="extract")
    cached = CachedLLM(JsonChat(callback_manager=CallbackManager([inner])), ExactCache(ledger=ledger))
    structured = cached.as_structured_llm(Person)
    with attribute(user="alice"):
        call(structured, how)
    miss = rows(ledger)
    assert miss == {
        f"extract/alice/{MODEL}": {"requests": 1, "cost_nanos": 20850, "estimated": 0, "cache_hits": 0}
    }
    with attribute(user="alice"):
        call(structured, how)
    after = rows(ledger)
    assert set(after) == set(miss)  # nothing on the Settings handler's feature "app"
    # as a direct CachedLLM hit: one more request, a cache hit, no cost, nothing estimated
    assert after[f"extract/alice/{MODEL}"] == {
        **miss[f"extract/alice/{MODEL}"],
        "requests": 2,
        "cache_hits": 1,
    }
    assert ledger.state().used["daily_usd"] == Decimal(20850) / 10**9  # nothing held


@pytest.mark.filterwarnings("ignore:The `json` method is deprecated")
@pytest.mark.parametrize("how", ["chat", "stream_chat", "achat"])
def test_a_cost_event_handler_records_no_call_for_the_hit_either(how: str) -> None:
    ledger = Ledger("memory://")
    handler = CostEventHandler(ledger, feature="app")
    get_dispatcher().add_event_handler(handler)
    try:
        structured = CachedLLM(JsonChat(), ExactCache(ledger=ledger)).as_structured_llm(Person)
        for _ in range(2):
            with attribute(user="alice"):
                call(structured, how)
    finally:
        get_dispatcher().event_handlers.remove(handler)
    assert rows(ledger) == {
        f"app/alice/{MODEL}": {"requests": 2, "cost_nanos": 20850, "estimated": 0, "cache_hits": 1}
    }
