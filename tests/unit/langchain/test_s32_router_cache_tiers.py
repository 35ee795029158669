"""A routed call refused by the budget is still answered from the cache of the tier the budget
stepped it down from (issue 4, section 6).

From the ladder's ``cheaper_tier`` share the router sends a payer's questions one tier down; from
``cache_only`` the ledger sends nothing and only caches answer. A response cache keys each model
apart, so an answer cached while the payer's questions went to the classifier's own tier lived in
that tier's cache, which the router never asked: the call was refused though the answer was
there. ``RouterChatModel`` now asks the stepped-over tiers' caches before refusing, and only
tiers whose calls a budget handler of the router's ledger checks (so a miss there is refused too,
never sent). Real LangChain runs, a real memory ledger and response cache, fake tier models that
record every call that reaches them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from router_fakes import TierModel

from langchain_tokenbudget import (
    AsyncBudgetCallbackHandler,
    BudgetCallbackHandler,
    RouterChatModel,
    TokenBudgetLLMCache,
)
from langchain_tokenbudget._tiers import ROUTE_KEY
from tokenbudget_core import BudgetPolicy, ExactCache, FeatureBudget, Ledger, Usage
from tokenbudget_core.errors import BudgetExceededError

PAYER = {"feature": "chat", "user": "u1"}
HARD = (
    "Analyze in depth the trade-offs of Paxos, Raft and PBFT, step by step, with proofs of safety "
    "and liveness. Compare their message complexity and explain the failure models."
)
OTHER_HARD = HARD.replace("Paxos, Raft and PBFT", "two-phase and three-phase commit")


class NamedTierModel(TierModel):
    """A tier model whose settings name its model (and its ``max_tokens``, when set), as a
    provider integration's do: a response cache keys its answers apart from another model's."""

    max_tokens: int | None = None

    @property
    def _identifying_params(self) -> dict[str, Any]:
        named: dict[str, Any] = {"model_name": self.model_name}
        return named if self.max_tokens is None else {**named, "max_tokens": self.max_tokens}


def reply(text: str, model: str) -> AIMessage:
    return AIMessage(
        text,
        usage_metadata={"input_tokens": 60, "output_tokens": 40, "total_tokens": 100},
        response_metadata={"model_name": model},
    )


def setup(*, handler_on: str = "config", sync: bool = True) -> tuple[Ledger, RouterChatModel, dict[str, Any]]:
    ledger = Ledger(
        "memory://", policy=BudgetPolicy(features={"chat": FeatureBudget(user_daily_tokens=10_000)})
    )
    cache = TokenBudgetLLMCache(ExactCache(ledger=ledger))
    handler = (BudgetCallbackHandler if sync else AsyncBudgetCallbackHandler)(ledger, max_output_tokens=100)
    small = NamedTierModel(
        model_name="gpt-4o-mini", answers=[reply("small answer", "gpt-4o-mini")], cache=cache
    )
    large = NamedTierModel(model_name="gpt-4o", answers=[reply("large answer", "gpt-4o")], cache=cache)
    config: dict[str, Any] = {"metadata": PAYER}
    if handler_on == "config":
        config["callbacks"] = [handler]
    else:  # on the small tier's model only: the large tier's calls are not checked by it
        small.callbacks = [handler]
    router = RouterChatModel({"small": small, "large": large}, ledger=ledger, max_tokens=100)
    return ledger, router, config


def push_to(ledger: Ledger, share: float) -> None:
    """Spend up to ``share`` of the payer's 10,000 tokens (what earlier calls used)."""
    used = sum(ledger.state(**PAYER).used.values())
    ledger.record(Usage(input_tokens=int(share * 10_000) - int(used)), model="gpt-4o-mini", **PAYER)


def tiers(router: RouterChatModel) -> tuple[TierModel, TierModel]:
    small, large = router._tiers.tier_chat["small"], router._tiers.tier_chat["large"]
    assert isinstance(small, TierModel)
    assert isinstance(large, TierModel)
    return small, large


def test_a_question_cached_on_the_classifiers_tier_is_served_after_the_budget_stepped_it_down() -> None:
    ledger, router, config = setup()
    small, large = tiers(router)
    first = router.invoke(HARD, config=config)
    assert first.content == "large answer"  # normal budget: the classifier's tier, sent and cached
    assert first.response_metadata[ROUTE_KEY]["tier"] == "large"
    push_to(ledger, 0.91)
    assert ledger.state(**PAYER).step == "cache_only"
    sent = len(small.received), len(large.received)

    again = router.invoke(HARD, config=config)

    assert again.content == "large answer"  # refused on the small tier, found in the large one's cache
    route = again.response_metadata[ROUTE_KEY]
    assert route["tier"] == "large"
    assert route["answered_by"] == "gpt-4o"
    assert "tier large's cache asked" in route["reason"]
    assert (len(small.received), len(large.received)) == sent  # nothing was sent
    with pytest.raises(BudgetExceededError) as refused:  # a new question: no cache has it
        router.invoke(OTHER_HARD, config=config)
    assert refused.value.step == "cache_only"
    assert (len(small.received), len(large.received)) == sent


def test_the_async_router_asks_the_same_caches() -> None:
    async def scenario() -> None:
        ledger, router, config = setup(sync=False)
        small, large = tiers(router)
        assert (await router.ainvoke(HARD, config=config)).content == "large answer"
        push_to(ledger, 0.92)
        sent = len(small.received), len(large.received)
        assert (await router.ainvoke(HARD, config=config)).content == "large answer"
        with pytest.raises(BudgetExceededError):
            await router.ainvoke(OTHER_HARD, config=config)
        assert (len(small.received), len(large.received)) == sent

    asyncio.run(scenario())


def test_a_tier_no_budget_handler_checks_is_asked_cache_only() -> None:
    """The budget handler is on the small tier's model only: the large tier's calls are not
    checked, so an alternate there must be cache-only by itself (a miss is refused, not sent)."""
    ledger, router, config = setup(handler_on="small")
    small, large = tiers(router)
    push_to(ledger, 0.91)
    with pytest.raises(BudgetExceededError) as refused:
        router.invoke(HARD, config=config)
    assert refused.value.step == "cache_only"
    assert large.received == []  # nothing went out
    assert small.received == []


def test_an_alternate_the_budget_would_take_is_not_sent() -> None:
    """(regression review s32) The small tier asks for 3,000 output tokens, so at 65% its call is
    refused (it would cross cache_only) while the large tier's smaller call would fit: asked as
    an alternate, it was sent to the premium model though the payer's call was refused."""
    ledger, router, config = setup()
    small, large = tiers(router)
    small.max_tokens, large.max_tokens = 3_000, 100  # each tier's own cap: the router sets none
    router = RouterChatModel({"small": small, "large": large}, ledger=ledger)
    push_to(ledger, 0.65)
    with pytest.raises(BudgetExceededError) as refused:
        router.invoke(HARD, config=config)
    assert refused.value.step == "cache_only"
    assert small.received == []
    assert large.received == []  # the premium tier was asked its cache only


def test_below_the_refusing_steps_the_stepped_down_tier_answers() -> None:
    ledger, router, config = setup()
    small, large = tiers(router)
    push_to(ledger, 0.65)  # cheaper_tier: one tier down, still sent
    message = router.invoke(HARD, config=config)
    assert message.content == "small answer"
    assert message.response_metadata[ROUTE_KEY]["cache_tiers"] == ["large"]
    assert len(small.received) == 1
    assert large.received == []


@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
def test_an_agents_routing_middleware_asks_the_same_caches(how: str) -> None:
    from langchain.agents import create_agent

    from langchain_tokenbudget import RoutingMiddleware

    ledger, router, config = setup(sync=how == "invoke")
    small, large = tiers(router)
    agent = create_agent(
        small, middleware=[RoutingMiddleware({"small": small, "large": large}, ledger=ledger)]
    )

    def ask(text: str) -> AIMessage:
        payload = {"messages": [HumanMessage(text)]}
        out = (
            agent.invoke(payload, config) if how == "invoke" else asyncio.run(agent.ainvoke(payload, config))
        )
        message = out["messages"][-1]
        assert isinstance(message, AIMessage)
        return message

    assert ask(HARD).content == "large answer"
    push_to(ledger, 0.91)
    sent = len(small.received), len(large.received)
    again = ask(HARD)
    assert again.content == "large answer"
    assert again.response_metadata[ROUTE_KEY]["tier"] == "large"
    with pytest.raises(BudgetExceededError):
        ask(OTHER_HARD)
    assert (len(small.received), len(large.received)) == sent
