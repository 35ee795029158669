"""``RoutedLLM(ledger=)`` routes for the payer its tiers' calls are charged to (review s30
ladder, finding 2): in LlamaIndex the payer is named by ``BudgetCallbackHandler(feature=,
user=)``, not on the call, and the router read the budgets of calls naming no payer instead. A
payer at 80% of their budget got the premium tier, and a payer at 0% was refused once the calls
naming no user had spent their own budget. The router now reads the payer the handler charges
(the one ``CachedLLM`` follows), under an ``attribute()`` block's ids, which win; sync, async
and streaming alike. Real ``CustomLLM`` tiers on a real memory ledger."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.callbacks import CallbackManager
from llama_index.core.instrumentation import get_dispatcher
from test_llamaindex_routed_llm import HARD, ROUTE, TierLLM, tiers

from llamaindex_tokenbudget import BudgetCallbackHandler, CostEventHandler, RoutedLLM
from tokenbudget_core import BudgetPolicy, FeatureBudget, Ledger, Usage, attribute

HOWS = [
    "chat",
    "complete",
    "stream_chat",
    "stream_complete",
    "achat",
    "acomplete",
    "astream_chat",
    "astream_complete",
]
GPT_4O_USD_PER_INPUT_TOKEN = 2.5 / 1_000_000


def spend(ledger: Ledger, share: float, **payer: str) -> None:
    """Charge ``share`` of a $1 budget on gpt-4o input tokens to ``payer`` (none: the anonymous one)."""
    tokens = round(share / GPT_4O_USD_PER_INPUT_TOKEN)
    ledger.record(Usage(input_tokens=tokens, output_tokens=0), model="gpt-4o", **payer)


def ask(llm: RoutedLLM, how: str, prompt: str = HARD) -> dict[str, Any]:
    """The route of one call made the way ``how`` names (a stream read to its end)."""
    messages = [ChatMessage(role="user", content=prompt)]

    async def call_async() -> Any:
        if how == "achat":
            return await llm.achat(messages)
        if how == "acomplete":
            return await llm.acomplete(prompt)
        gen = await (llm.astream_chat(messages) if how == "astream_chat" else llm.astream_complete(prompt))
        return [chunk async for chunk in gen][-1]

    if how == "chat":
        response: Any = llm.chat(messages)
    elif how == "complete":
        response = llm.complete(prompt)
    elif how == "stream_chat":
        response = list(llm.stream_chat(messages))[-1]
    elif how == "stream_complete":
        response = list(llm.stream_complete(prompt))[-1]
    else:
        response = asyncio.run(call_async())
    return response.additional_kwargs[ROUTE]  # type: ignore[no-any-return]


def feature_ledger() -> Ledger:
    """$1 a day per user of the ``chat`` feature."""
    return Ledger("memory://", policy=BudgetPolicy(features={"chat": FeatureBudget(user_daily_usd="1")}))


def routed(ledger: Ledger, handler: BudgetCallbackHandler, *, on: str = "tiers") -> RoutedLLM:
    """A router over three tiers and ``handler``: on the tiers' own callback managers (it charges
    their calls), or on the router's (an engine's or ``Settings``' manager: routing reads its
    payer, and a handler there that the tiers lack is warned about, ``warn_unreached``)."""
    if on == "tiers":
        return RoutedLLM(tiers=tiers(callback_manager=CallbackManager([handler])), ledger=ledger)
    return RoutedLLM(tiers=tiers(), ledger=ledger, callback_manager=CallbackManager([handler]))


def test_a_hard_question_goes_to_the_premium_tier_while_the_payer_has_budget() -> None:
    # (the baseline the step-downs below are measured against)
    ledger = feature_ledger()
    llm = routed(ledger, BudgetCallbackHandler(ledger, feature="chat", user="u"))
    route = ask(llm, "complete")
    assert (route["tier"], route["budget_step"]) == ("large", "normal")


@pytest.mark.parametrize("on", ["tiers", "router"])
@pytest.mark.parametrize("how", HOWS)
def test_a_payer_named_only_by_the_handler_at_80_percent_is_stepped_down(how: str, on: str) -> None:
    ledger = feature_ledger()
    spend(ledger, 0.8, feature="chat", user="u")
    llm = routed(ledger, BudgetCallbackHandler(ledger, feature="chat", user="u"), on=on)
    route = ask(llm, how)
    assert (route["tier"], route["budget_step"]) == ("medium", "smaller_context")
    assert route["budget_shares"]["user_daily_usd"] == pytest.approx(0.8, abs=0.001)


@pytest.mark.parametrize("how", HOWS)
def test_a_payer_at_0_percent_is_served_while_the_anonymous_budget_is_spent(how: str) -> None:
    ledger = Ledger("memory://", policy=BudgetPolicy(user_daily_usd="1"))  # per user, all features
    spend(ledger, 1.0)  # the calls naming no user used up their budget
    assert ledger.state().step == "hard_refusal"
    llm = routed(ledger, BudgetCallbackHandler(ledger, user="alice"))
    route = ask(llm, how)
    assert (route["tier"], route["budget_step"]) == ("large", "normal")
    assert route["budget_shares"] == {"user_daily_usd (all features)": pytest.approx(0.0, abs=0.001)}


@pytest.mark.parametrize("how", ["complete", "acomplete", "stream_chat", "astream_complete"])
def test_an_attribute_block_names_the_payer_over_the_handler(how: str) -> None:
    ledger = feature_ledger()
    spend(ledger, 0.8, feature="chat", user="spent")
    spent_by_handler = routed(ledger, BudgetCallbackHandler(ledger, feature="chat", user="spent"))
    with attribute(user="fresh"):  # the block's user, the handler's feature: fresh's budget
        route = ask(spent_by_handler, how)
    assert (route["tier"], route["budget_step"]) == ("large", "normal")
    fresh_by_handler = routed(ledger, BudgetCallbackHandler(ledger, feature="chat", user="fresh"))
    with attribute(user="spent"):
        route = ask(fresh_by_handler, how)
    assert (route["tier"], route["budget_step"]) == ("medium", "smaller_context")


def test_the_handler_on_the_routers_ledger_names_the_payer_before_another_ledgers() -> None:
    ledger, other = feature_ledger(), feature_ledger()
    spend(ledger, 0.8, feature="chat", user="u")
    manager = CallbackManager(
        [BudgetCallbackHandler(other, feature="chat", user="elsewhere"),
         BudgetCallbackHandler(ledger, feature="chat", user="u")]
    )  # fmt: skip
    llm = RoutedLLM(tiers=tiers(callback_manager=manager), ledger=ledger)
    route = ask(llm, "complete")
    assert (route["tier"], route["budget_step"]) == ("medium", "smaller_context")


def test_a_nested_routers_tiers_handler_names_the_payer() -> None:
    ledger = feature_ledger()
    spend(ledger, 0.8, feature="chat", user="u")
    handler = BudgetCallbackHandler(ledger, feature="chat", user="u")
    inner = RoutedLLM(tiers=tiers(callback_manager=CallbackManager([handler])))
    outer = RoutedLLM(
        tiers={"small": TierLLM(model_name="gpt-4o-mini"), "large": inner},
        models={"large": "gpt-4o"},
        ledger=ledger,
    )
    route = ask(outer, "complete")
    assert (route["tier"], route["budget_step"]) == ("small", "smaller_context")


def test_without_a_budget_handler_a_cost_handlers_payer_is_read() -> None:
    ledger = feature_ledger()
    spend(ledger, 0.8, feature="chat", user="u")
    recorder = CostEventHandler(ledger, feature="chat", user="u")
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(recorder)
    try:
        route = ask(RoutedLLM(tiers=tiers(), ledger=ledger), "complete")
    finally:
        dispatcher.event_handlers.remove(recorder)
    assert (route["tier"], route["budget_step"]) == ("medium", "smaller_context")
