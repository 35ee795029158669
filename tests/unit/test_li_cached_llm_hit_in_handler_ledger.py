"""A LlamaIndex ``CachedLLM`` hit is recorded in the ledger of the wrapped LLM's
``BudgetCallbackHandler`` when the cache keeps no ledger or another one, as LangChain's handler
records one: the hit was served but counted nowhere in the handler's books (hit rate and
savings missing from its reports). A cache sharing the handler's ledger records it once."""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms import ChatMessage, MockLLM

from llamaindex_tokenbudget import BudgetCallbackHandler, CachedLLM
from tokenbudget_core import ExactCache, Ledger, build_report

QUESTION = [ChatMessage(role="user", content="hello there")]


def build(cache_ledger: str) -> tuple[Ledger, Ledger, CachedLLM]:
    ledger, other = Ledger("memory://"), Ledger("memory://")
    handler = BudgetCallbackHandler(ledger, model="gpt-4o-mini", feature="chat", user="u1")
    llm = MockLLM(max_tokens=5, callback_manager=CallbackManager([handler]))
    keeps = {"none": None, "other": other, "same": ledger}[cache_ledger]
    return ledger, other, CachedLLM(llm, ExactCache(ledger=keeps), model="gpt-4o-mini")


@pytest.mark.parametrize("cache_ledger", ["none", "other", "same"])
def test_a_hit_is_in_the_handlers_books_once(cache_ledger: str) -> None:
    ledger, other, cached = build(cache_ledger)
    first, again = cached.chat(QUESTION), cached.chat(QUESTION)
    assert first.message.content == again.message.content
    totals = build_report(ledger).totals
    assert (totals.requests, totals.cache_hits) == (2, 1)  # the call, and the hit
    assert build_report(other).totals.cache_hits == (1 if cache_ledger == "other" else 0)
    users = {r.key: r.cache_hits for r in build_report(ledger).breakdown("user").rows}
    assert users == {"u1": 1}  # on the handler's payer


def test_the_async_path_records_it_too() -> None:
    ledger, _, cached = build("none")

    async def twice() -> None:
        await cached.achat(QUESTION)
        await cached.achat(QUESTION)

    asyncio.run(twice())
    assert build_report(ledger).totals.cache_hits == 1
