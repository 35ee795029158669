"""The ladder's ``cache_only`` step is enforced (issue 4, section 6): from that share of a budget
the ledger refuses a call, and LangChain's ``BudgetCallbackHandler`` leaves the refusal to the
``TokenBudgetLLMCache`` its model looks up first: a question answered before is served from the
cache at $0, a new one is refused with ``step == "cache_only"`` and never reaches the model.
Before, the step was advice: the new question was reserved and sent. Real LangChain runs, a real
memory ledger, LangChain's own fake chat model (it answers from an iterator: a call that went
out takes a reply from it)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from langchain_tokenbudget import AsyncBudgetCallbackHandler, BudgetCallbackHandler, TokenBudgetLLMCache
from tokenbudget_core import BudgetPolicy, ExactCache, FeatureBudget, Ledger, Usage, build_report
from tokenbudget_core.budgets import Ladder
from tokenbudget_core.errors import BudgetExceededError

FEATURE = {"feature": "chat", "user": "u1"}


def reply(i: int) -> AIMessage:
    return AIMessage(
        f"answer {i}",
        usage_metadata={"input_tokens": 1_000, "output_tokens": 100, "total_tokens": 1_100},
        response_metadata={"model_name": "gpt-4o-mini"},
    )


def setup(
    sync: bool, ladder: Ladder | None = None
) -> tuple[Ledger, GenericFakeChatModel, dict[str, object], list[AIMessage]]:
    policy = BudgetPolicy(
        features={"chat": FeatureBudget(user_daily_tokens=10_000)}, ladder=ladder or Ladder()
    )
    ledger = Ledger("memory://", policy=policy)
    handler = (BudgetCallbackHandler if sync else AsyncBudgetCallbackHandler)(
        ledger, model="gpt-4o-mini", max_output_tokens=100
    )
    replies = [reply(i) for i in range(10)]
    model = GenericFakeChatModel(messages=iter(replies))
    model.cache = TokenBudgetLLMCache(ExactCache(ledger=ledger))
    return ledger, model, {"callbacks": [handler], "metadata": FEATURE}, replies


def push_to(ledger: Ledger, share: float) -> None:
    """Spend up to ``share`` of the payer's 10,000 tokens (what earlier calls used)."""
    used = sum(ledger.state(**FEATURE).used.values())
    ledger.record(Usage(input_tokens=int(share * 10_000) - int(used)), model="gpt-4o-mini", **FEATURE)


def test_at_cache_only_a_cached_question_is_served_and_a_new_one_is_refused_unsent() -> None:
    ledger, model, config, _ = setup(sync=True)
    assert model.invoke("What is my plan?", config=config).content == "answer 0"  # sent, cached
    push_to(ledger, 0.9)
    assert ledger.state(**FEATURE).step == "cache_only"
    assert model.invoke("What is my plan?", config=config).content == "answer 0"  # from the cache
    with pytest.raises(BudgetExceededError) as refused:
        model.invoke("A new question", config=config)
    assert refused.value.step == "cache_only"
    # nothing went out: the next call that is sent gets the model's second reply
    ledger.policy = BudgetPolicy(features={"chat": FeatureBudget(user_daily_tokens=100_000)})
    assert model.invoke("A new question", config=config).content == "answer 1"
    totals = build_report(ledger).totals
    assert totals.cache_hits == 1
    assert totals.requests == 4  # the earlier spend, two calls sent, one hit; the refusal is none


def test_the_async_handler_enforces_it_too() -> None:
    async def scenario() -> None:
        ledger, model, config, _ = setup(sync=False)
        assert (await model.ainvoke("What is my plan?", config=config)).content == "answer 0"
        push_to(ledger, 0.92)
        assert (await model.ainvoke("What is my plan?", config=config)).content == "answer 0"
        with pytest.raises(BudgetExceededError) as refused:
            await model.ainvoke("A new question", config=config)
        assert refused.value.step == "cache_only"
        assert ledger.state(**FEATURE).used == {"user_daily_tokens": 9_200}  # the refusal holds nothing

    asyncio.run(scenario())


def test_below_cache_only_a_new_question_is_sent() -> None:
    ledger, model, config, _ = setup(sync=True)
    push_to(ledger, 0.8)  # smaller_context: the call fits below cache_only
    assert model.invoke("A new question", config=config).content == "answer 0"
    assert build_report(ledger).totals.cost_usd > Decimal(0)


def test_a_ladder_skipping_cache_only_sends_new_questions_past_its_share() -> None:
    ledger, model, config, _ = setup(sync=True, ladder=Ladder(cache_only=None))
    push_to(ledger, 0.9)
    assert model.invoke("A new question", config=config).content == "answer 0"
