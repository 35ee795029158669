"""An LLM that answers with its own provider call and asks a ``CachedLLM`` helper inside that
call is charged for its own call when the helper's cache answers (review s23 fix #4, a risk of
70b1339): only a ``StructuredLLM`` call whose inner call the cache answered made no provider
call and is released / not recorded. Before, a hit released whatever LLM call enclosed it, so
the paid call was lost, for both handlers.

Real LlamaIndex wrappers, ``CachedLLM`` over an ``ExactCache`` recording on the ledger; the model
is the usage-reporting ``CustomLLM`` of ``test_s22_llamaindex_routed_astream``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from llama_index.core.callbacks import CallbackManager
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.llms import LLM, CompletionResponse
from llama_index.core.llms.callbacks import llm_completion_callback
from test_s22_llamaindex_routed_astream import UsageLLM

from llamaindex_tokenbudget import BudgetCallbackHandler, CachedLLM, CostEventHandler
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.response_cache import ExactCache

QUESTION = "is this answer polite?"


class SelfChecking(UsageLLM):
    """Answers with its own provider call (usage reported), then asks a helper LLM about it."""

    helper: LLM | None = None

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        answer = CompletionResponse(text="own answer", raw=self._raw())  # its provider call
        assert self.helper is not None
        self.helper.complete(QUESTION)
        return answer


def rows(ledger: Ledger) -> dict[str, tuple[int, int, int]]:
    return {
        r.rollup_key: (
            int(r.values["requests"]),
            int(r.values.get("cost_nanos", 0)),
            int(r.values.get("cache_hits", 0)),
        )
        for r in ledger.store.rollup([ledger.day()])
    }


def test_a_budget_handler_charges_the_own_call_of_an_llm_whose_cached_helper_hits() -> None:
    ledger = Ledger("memory://", policy=BudgetPolicy(daily_usd=Decimal("1")))
    manager = CallbackManager([BudgetCallbackHandler(ledger, feature="app")])
    helper = CachedLLM(
        UsageLLM(model_name="gpt-4o-mini", callback_manager=manager), ExactCache(ledger=ledger)
    )
    helper.complete(QUESTION)  # the helper's answer is now cached
    before = rows(ledger)
    llm = SelfChecking(model_name="gpt-4o", helper=helper, callback_manager=manager)
    llm.complete("hello")  # its own call, and a helper call the cache answers
    after = rows(ledger)
    assert after["app//gpt-4o"][0] == 1  # the own call is charged
    assert after["app//gpt-4o"][1] > 0
    requests, cost, hits = before["app//gpt-4o-mini"]
    assert after["app//gpt-4o-mini"] == (requests + 1, cost, hits + 1)  # the helper's hit, free
    assert ledger.state().used["daily_usd"] * 10**9 == sum(c for _, c, _ in after.values())  # nothing held


def test_a_cost_event_handler_records_the_own_call_of_an_llm_whose_cached_helper_hits() -> None:
    ledger = Ledger("memory://")
    handler = CostEventHandler(ledger, feature="app")
    get_dispatcher().add_event_handler(handler)
    try:
        helper = CachedLLM(UsageLLM(model_name="gpt-4o-mini"), ExactCache(ledger=ledger))
        helper.complete(QUESTION)
        SelfChecking(model_name="gpt-4o", helper=helper).complete("hello")
    finally:
        get_dispatcher().event_handlers.remove(handler)
    after = rows(ledger)
    assert after["app//gpt-4o"][0] == 1
    assert after["app//gpt-4o"][1] > 0
    assert after["app//gpt-4o-mini"][0] == 2
    assert after["app//gpt-4o-mini"][2] == 1
