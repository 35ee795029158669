"""An LLM that answers with its own provider call and calls a helper LLM inside it is charged
for its own call whatever the helper does: a ``CachedLLM`` helper that misses, or a helper with
no cache at all (review s23d #1). Before, any LLM event nested in an open call marked that call
handed over, so only the helper was charged, by ``BudgetCallbackHandler`` and
``CostEventHandler`` alike, and the same call cost nothing when the helper missed but its price
when it hit. A nested event is the enclosing call's provider call only for a ``StructuredLLM``
or the same LLM (``CustomLLM.chat`` calling its own ``complete``: still charged once).

Real LlamaIndex wrappers; the models are the usage-reporting ``CustomLLM`` of
``test_s22_llamaindex_routed_astream`` and the self-checking LLM of
``test_s23c_llamaindex_cached_helper``.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
from llama_index.core.callbacks import CallbackManager
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.llms import LLM, ChatMessage
from test_s22_llamaindex_routed_astream import UsageLLM
from test_s23c_llamaindex_cached_helper import SelfChecking, rows

from llamaindex_tokenbudget import BudgetCallbackHandler, CachedLLM, CostEventHandler
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.response_cache import ExactCache

HELPERS: dict[str, Callable[[LLM, Ledger], LLM]] = {
    "cached helper (miss)": lambda inner, ledger: CachedLLM(inner, ExactCache(ledger=ledger)),
    "plain helper": lambda inner, ledger: inner,
}


@pytest.mark.parametrize("helper_kind", HELPERS)
def test_a_budget_handler_charges_the_own_call_of_an_llm_whose_helper_calls_the_provider(
    helper_kind: str,
) -> None:
    ledger = Ledger("memory://", policy=BudgetPolicy(daily_usd=Decimal("1")))
    manager = CallbackManager([BudgetCallbackHandler(ledger, feature="app")])
    helper = HELPERS[helper_kind](UsageLLM(model_name="gpt-4o-mini", callback_manager=manager), ledger)
    llm = SelfChecking(model_name="gpt-4o", helper=helper, callback_manager=manager)
    llm.complete("hello")  # its own call, and a helper call that reaches the provider
    after = rows(ledger)
    assert after["app//gpt-4o"][0] == 1  # the own call is charged
    assert after["app//gpt-4o"][1] > 0
    assert after["app//gpt-4o-mini"][:1] == (1,)  # and the helper's, once
    assert after["app//gpt-4o-mini"][1] > 0
    assert ledger.state().used["daily_usd"] * 10**9 == sum(c for _, c, _ in after.values())  # nothing held


@pytest.mark.parametrize("helper_kind", HELPERS)
def test_a_cost_event_handler_records_the_own_call_of_an_llm_whose_helper_calls_the_provider(
    helper_kind: str,
) -> None:
    ledger = Ledger("memory://")
    handler = CostEventHandler(ledger, feature="app")
    get_dispatcher().add_event_handler(handler)
    try:
        helper = HELPERS[helper_kind](UsageLLM(model_name="gpt-4o-mini"), ledger)
        SelfChecking(model_name="gpt-4o", helper=helper).complete("hello")
    finally:
        get_dispatcher().event_handlers.remove(handler)
    after = rows(ledger)
    assert after["app//gpt-4o"][0] == 1
    assert after["app//gpt-4o"][1] > 0
    assert after["app//gpt-4o-mini"][0] == 1
    assert after["app//gpt-4o-mini"][1] > 0


def test_a_custom_llm_chat_calling_its_own_complete_is_still_charged_once() -> None:
    ledger = Ledger("memory://", policy=BudgetPolicy(daily_usd=Decimal("1")))
    manager = CallbackManager([BudgetCallbackHandler(ledger, feature="app")])
    handler = CostEventHandler(Ledger("memory://"), feature="app")
    get_dispatcher().add_event_handler(handler)
    try:
        UsageLLM(model_name="gpt-4o", callback_manager=manager).chat([ChatMessage(role="user", content="hi")])
    finally:
        get_dispatcher().event_handlers.remove(handler)
    assert rows(ledger)["app//gpt-4o"][0] == 1
    assert rows(handler.ledger)["app//gpt-4o"][0] == 1
