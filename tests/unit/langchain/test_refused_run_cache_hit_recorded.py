"""A cache hit served to a run the budget refused (left to the cache: a hit costs nothing, so a
``cache_only`` step answers from it) is recorded in the handler's ledger, as a hit on a run the
budget let through is: with a cache keeping no ledger or another one, the hit was served but
counted nowhere in the handler's books (hit rate and savings understated exactly when the
budget ran out)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from langchain_tokenbudget import AsyncBudgetCallbackHandler, BudgetCallbackHandler, TokenBudgetLLMCache
from tokenbudget_core import BudgetPolicy, ExactCache, FeatureBudget, Ledger, build_report
from tokenbudget_core.errors import BudgetExceededError


def reply(i: int) -> AIMessage:
    return AIMessage(
        f"answer {i}",
        usage_metadata={"input_tokens": 100_000, "output_tokens": 100_000, "total_tokens": 200_000},
        response_metadata={"model_name": "gpt-4o-mini"},
    )


def setup(cache_ledger: str, sync: bool) -> tuple[Ledger, GenericFakeChatModel, dict[str, object]]:
    ledger = Ledger("memory://", policy=BudgetPolicy(features={"chat": FeatureBudget(user_daily_usd="0.05")}))
    keeps = {"none": None, "other": Ledger("memory://"), "same": ledger}[cache_ledger]
    handler = (BudgetCallbackHandler if sync else AsyncBudgetCallbackHandler)(ledger, model="gpt-4o-mini")
    model = GenericFakeChatModel(messages=iter([reply(i) for i in range(10)]))
    model.cache = TokenBudgetLLMCache(ExactCache(ledger=keeps))
    return ledger, model, {"callbacks": [handler], "metadata": {"feature": "chat", "user": "u1"}}


@pytest.mark.parametrize("cache_ledger", ["none", "other", "same"])
def test_a_hit_served_to_a_refused_run_is_recorded_once(cache_ledger: str) -> None:
    ledger, model, config = setup(cache_ledger, sync=True)
    model.invoke("What is my plan?", config=config)  # $0.075: the user's budget is spent
    with pytest.raises(BudgetExceededError):
        model.invoke("Another question", config=config)
    assert ledger.state(feature="chat", user="u1").step == "hard_refusal"
    assert model.invoke("What is my plan?", config=config).content == "answer 0"  # from the cache
    totals = build_report(ledger).totals
    assert totals.cache_hits == 1
    assert totals.saved_usd == Decimal("0.075")


@pytest.mark.parametrize("cache_ledger", ["none", "same"])
def test_the_async_handler_records_it_too(cache_ledger: str) -> None:
    async def scenario() -> Ledger:
        ledger, model, config = setup(cache_ledger, sync=False)
        await model.ainvoke("What is my plan?", config=config)
        with pytest.raises(BudgetExceededError):
            await model.ainvoke("Another question", config=config)
        assert (await model.ainvoke("What is my plan?", config=config)).content == "answer 0"
        return ledger

    totals = build_report(asyncio.run(scenario())).totals
    assert totals.cache_hits == 1
    assert totals.saved_usd == Decimal("0.075")
