"""RoutedLLM calls charged by the LlamaIndex budget handlers carry their premium model: reports
show what routing saved (computed independently with ``cost_of``)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from llama_index.core.callbacks import CallbackManager
from llama_index.core.instrumentation import get_dispatcher
from test_llamaindex_routed_llm import EASY, HARD, tiers

from llamaindex_tokenbudget import BudgetCallbackHandler, CostEventHandler, RoutedLLM
from tokenbudget_core import Ledger, Usage
from tokenbudget_core.pricing import cost_of
from tokenbudget_core.reports import build_report

USAGE = Usage(input_tokens=20, output_tokens=3)  # what every TierLLM reports


def saving(*models: str) -> Decimal:
    return sum((cost_of(USAGE, "gpt-4o") - cost_of(USAGE, m) for m in models), Decimal(0))


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger("memory://", spool_path=tmp_path / "spool")


def test_routed_llm_with_the_budget_callback(ledger: Ledger) -> None:
    handler = BudgetCallbackHandler(ledger, feature="docs")
    llm = RoutedLLM(tiers=tiers(callback_manager=CallbackManager([handler])))
    models = [llm.complete(p).additional_kwargs["tokenbudget_route"]["model"] for p in (EASY, HARD)]
    assert models[0] == "gpt-4o-mini"
    assert models[1] != "gpt-4o-mini"
    t = build_report(ledger, last_days=1).totals
    assert t.requests == t.routed_requests == 2
    assert t.routing_saved_usd == saving(*models) > 0


def test_a_routed_stream_is_charged_with_its_saving(ledger: Ledger) -> None:
    handler = BudgetCallbackHandler(ledger)
    llm = RoutedLLM(tiers=tiers(callback_manager=CallbackManager([handler])))
    assert "".join(c.delta or "" for c in llm.stream_complete(EASY)) == "small answer"
    [row] = ledger.store.rollup([ledger.day()])
    estimate = Usage(input_tokens=row.values["input_tokens"], output_tokens=row.values["output_tokens"])
    assert row.values["estimated"] == 1  # the stream reported no usage
    t = build_report(ledger, last_days=1).totals
    assert t.routed_requests == 1
    assert t.routing_saved_usd == cost_of(estimate, "gpt-4o") - cost_of(estimate, "gpt-4o-mini")


async def test_routed_llm_async_with_the_budget_callback(ledger: Ledger) -> None:
    handler = BudgetCallbackHandler(ledger)
    llm = RoutedLLM(tiers=tiers(callback_manager=CallbackManager([handler])))
    await llm.acomplete(EASY)
    t = build_report(ledger, last_days=1).totals
    assert (t.routed_requests, t.routing_saved_usd) == (1, saving("gpt-4o-mini"))


@pytest.fixture
def cost_handler(ledger: Ledger) -> Iterator[CostEventHandler]:
    handler = CostEventHandler(ledger=ledger)
    get_dispatcher().add_event_handler(handler)
    yield handler
    get_dispatcher().event_handlers.remove(handler)


def test_routed_llm_with_the_cost_event_handler(ledger: Ledger, cost_handler: CostEventHandler) -> None:
    llm = RoutedLLM(tiers=tiers())
    llm.complete(EASY)
    llm.complete(EASY, force_tier="large")
    t = build_report(ledger, last_days=1).totals
    assert (t.requests, t.routed_requests) == (2, 2)
    assert t.routing_saved_usd == saving("gpt-4o-mini", "gpt-4o")


def by_model(ledger: Ledger) -> dict[str, int]:
    """Requests per model in today's rollup."""
    found: dict[str, int] = {}
    for row in ledger.store.rollup([ledger.day()]):
        model = row.rollup_key.rsplit("/", 1)[1]
        found[model] = found.get(model, 0) + row.values["requests"]
    return found


@pytest.mark.parametrize("handler_kind", ["callback", "event"])
def test_a_routed_call_is_charged_on_its_tier_model_not_the_handlers(
    ledger: Ledger, handler_kind: str
) -> None:
    """A handler's model= (needed when an LLM does not name its model) prices unrouted calls only."""
    if handler_kind == "callback":
        llm = RoutedLLM(
            tiers=tiers(
                callback_manager=CallbackManager([BudgetCallbackHandler(ledger, model="gpt-4o-mini")])
            )
        )
        llm.complete(EASY, force_tier="large")
    else:
        handler = CostEventHandler(ledger=ledger, model="gpt-4o-mini")
        get_dispatcher().add_event_handler(handler)
        try:
            RoutedLLM(tiers=tiers()).complete(EASY, force_tier="large")
        finally:
            get_dispatcher().event_handlers.remove(handler)
    assert by_model(ledger) == {"gpt-4o": 1}
    t = build_report(ledger, last_days=1).totals
    assert t.cost_usd == cost_of(USAGE, "gpt-4o")
    assert t.routing_saved_usd == 0  # the premium tier answered: nothing saved
