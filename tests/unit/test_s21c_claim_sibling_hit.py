"""A failed sync multi-prompt generate() settles a prompt the TokenBudgetLLMCache answered as the
hit it was, not as a sent prompt charged an estimate (review s21r finding 1)."""

from __future__ import annotations

import pytest
from echo_chat import Private
from langchain_core.messages import HumanMessage

from langchain_tokenbudget import BudgetCallbackHandler, TokenBudgetLLMCache
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report
from tokenbudget_core.response_cache import ExactCache


def test_a_failed_generate_settles_a_prompt_the_cache_answered_as_a_hit() -> None:
    ledger = Ledger("memory://")
    model = Private(cache=TokenBudgetLLMCache(ExactCache(ledger=ledger)))
    handler = BudgetCallbackHandler(ledger)
    meta = {"feature": "chat", "user_id": "u-1"}
    model.invoke("cached question", config={"callbacks": [handler], "metadata": meta})
    before = next(r for r in build_report(ledger).breakdown("user").rows if r.key == "u-1")
    with pytest.raises(RuntimeError, match="provider 500"):
        model.generate(
            [[HumanMessage("cached question")], [HumanMessage("boom")]], callbacks=[handler], metadata=meta
        )
    row = next(r for r in build_report(ledger).breakdown("user").rows if r.key == "u-1")
    assert model.calls == 1  # the cached prompt was not sent
    assert row.cost_usd == before.cost_usd  # nothing charged for it
    assert (row.requests, row.cache_hits, row.input_tokens) == (2, 1, 100)
