"""With a ``CostEventHandler`` and no ``BudgetCallbackHandler``, a ``CachedLLM``'s served hits are
recorded in that handler's ledger, whose payer scoped them, when the cache keeps no ledger or
another one: once per set of books, as a budget handler's are (review s30 llamaindex, finding 4;
before: recorded nowhere, a dashboard on that ledger showed no cache activity). Real
``MockLLM``, real memory ledgers read back with ``build_report``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.llms import ChatMessage, MockLLM

from llamaindex_tokenbudget import CachedLLM, CostEventHandler
from tokenbudget_core import ExactCache, Ledger, build_report

QUESTION = [ChatMessage(role="user", content="What are your opening hours?")]


@pytest.fixture
def handlers() -> Iterator[list[CostEventHandler]]:
    """Cost handlers put on the root dispatcher by the test, taken off after."""
    added: list[CostEventHandler] = []
    try:
        yield added
    finally:
        for handler in added:
            get_dispatcher().event_handlers.remove(handler)


def _on_dispatcher(handlers: list[CostEventHandler], handler: CostEventHandler) -> CostEventHandler:
    get_dispatcher().add_event_handler(handler)
    handlers.append(handler)
    return handler


@pytest.mark.parametrize("cache_ledger", ["none", "other", "same"])
def test_hits_are_in_the_cost_handlers_books_once(
    handlers: list[CostEventHandler], cache_ledger: str
) -> None:
    ledger, other = Ledger("memory://"), Ledger("memory://")
    _on_dispatcher(handlers, CostEventHandler(ledger, model="gpt-4o-mini", user="u1"))
    keeps = {"none": None, "other": other, "same": ledger}[cache_ledger]
    cached = CachedLLM(MockLLM(max_tokens=5), ExactCache(ledger=keeps), model="gpt-4o-mini")
    answers = [cached.chat(QUESTION) for _ in range(4)]
    assert sum("cache_hit" in a.additional_kwargs for a in answers) == 3
    totals = build_report(ledger).totals
    assert (totals.requests, totals.cache_hits) == (4, 3)  # the call, and the three hits
    assert build_report(other).totals.cache_hits == (3 if cache_ledger == "other" else 0)
    users = {r.key: r.cache_hits for r in build_report(ledger).breakdown("user").rows}
    assert users == {"u1": 3}  # on the handler's payer


def test_two_cost_handlers_of_one_ledger_record_a_hit_once(handlers: list[CostEventHandler]) -> None:
    ledger = Ledger("memory://")
    _on_dispatcher(handlers, CostEventHandler(ledger, model="gpt-4o-mini", user="u1"))
    _on_dispatcher(handlers, CostEventHandler(ledger, model="gpt-4o-mini", feature="chat"))
    cached = CachedLLM(MockLLM(max_tokens=5), ExactCache(), model="gpt-4o-mini")
    cached.chat(QUESTION)
    cached.chat(QUESTION)
    assert build_report(ledger).totals.cache_hits == 1


def test_the_async_path_records_them_too(handlers: list[CostEventHandler]) -> None:
    ledger = Ledger("memory://")
    _on_dispatcher(handlers, CostEventHandler(ledger, model="gpt-4o-mini", user="u1"))
    cached = CachedLLM(MockLLM(max_tokens=5), ExactCache(), model="gpt-4o-mini")

    async def run() -> None:
        await cached.achat(QUESTION)
        await cached.achat(QUESTION)
        async for _ in await cached.astream_chat(QUESTION):
            pass

    asyncio.run(run())
    totals = build_report(ledger).totals
    assert (totals.requests, totals.cache_hits) == (3, 2)
