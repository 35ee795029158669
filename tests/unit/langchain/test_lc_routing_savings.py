"""Routed LangChain calls reach the ledger with their premium model: reports show what routing saved.

Fake tier models report ``usage_metadata``; the expected saving is computed independently with
``cost_of`` (premium price minus tier price of the same usage).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from router_fakes import ProviderError, TierModel, tiers

from langchain_tokenbudget import (
    AsyncBudgetCallbackHandler,
    BudgetCallbackHandler,
    BudgetMiddleware,
    RouterChatModel,
    RoutingMiddleware,
)
from tokenbudget_core import Ledger, Usage
from tokenbudget_core.pricing import cost_of
from tokenbudget_core.reports import build_report

EASY = "What is the capital of France?"
HARD = (
    "Analyze the trade-offs, then design and implement a distributed rate limiter step by step: "
    "compare token bucket and sliding window, debug the race conditions, and explain why. " * 3
)
USAGE = {"small": (300, 20), "medium": (320, 60), "large": (340, 90)}
MODELS = {"small": "gpt-4o-mini", "medium": "gpt-4.1-mini", "large": "gpt-4o"}


def reply(tier: str) -> AIMessage:
    i, o = USAGE[tier]
    return AIMessage(
        f"{tier} answer", usage_metadata={"input_tokens": i, "output_tokens": o, "total_tokens": i + o}
    )


def usage_of(tier: str) -> Usage:
    i, o = USAGE[tier]
    return Usage(input_tokens=i, output_tokens=o)


def saving(*tiers_called: str) -> Decimal:
    return sum(
        (cost_of(usage_of(t), "gpt-4o") - cost_of(usage_of(t), MODELS[t]) for t in tiers_called), Decimal(0)
    )


def metered_tiers() -> dict[str, TierModel]:
    return tiers(**{t: [reply(t)] for t in USAGE})


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger("memory://", spool_path=tmp_path / "spool")


def charged_models(ledger: Ledger) -> dict[str, int]:
    return {
        r.rollup_key.rsplit("/", 1)[-1]: r.values["requests"] for r in ledger.store.rollup([ledger.day()])
    }


def test_router_with_the_budget_callback_reports_what_routing_saved(ledger: Ledger) -> None:
    handler = BudgetCallbackHandler(ledger, feature="chat")
    model = RouterChatModel(metered_tiers())
    config = {"callbacks": [handler]}
    tiers_called = [model.invoke(p, config=config).response_metadata["tokenbudget_route"]["tier"]
                    for p in (EASY, HARD, EASY)]  # fmt: skip
    model.invoke(EASY, config=config, force_tier="large")
    tiers_called.append("large")
    assert tiers_called[0] == "small"
    assert tiers_called[1] != "small"
    report = build_report(ledger, last_days=1)
    assert report.totals.requests == report.totals.routed_requests == 4
    assert report.totals.routing_saved_usd == saving(*tiers_called) > 0
    [feature] = report.breakdown("feature").rows
    assert (feature.key, feature.routing_saved_usd) == ("chat", saving(*tiers_called))


async def test_the_async_handler_records_the_saving_too(ledger: Ledger) -> None:
    handler = AsyncBudgetCallbackHandler(ledger)
    model = RouterChatModel(metered_tiers())
    await model.ainvoke(EASY, config={"callbacks": [handler]})
    t = build_report(ledger, last_days=1).totals
    assert (t.routed_requests, t.routing_saved_usd) == (1, saving("small"))


def test_a_generate_call_charges_the_tier_run_not_the_routers_own(ledger: Ledger) -> None:
    handler = BudgetCallbackHandler(ledger)
    model = RouterChatModel(metered_tiers(), callbacks=[handler])
    model.generate([[HumanMessage(EASY)]])
    assert charged_models(ledger) == {"gpt-4o-mini": 1}
    t = build_report(ledger, last_days=1).totals
    assert (t.routed_requests, t.routing_saved_usd) == (1, saving("small"))


def test_replaying_a_routed_commit_does_not_double_the_saving(ledger: Ledger) -> None:
    handler = BudgetCallbackHandler(ledger)
    model = RouterChatModel(metered_tiers())
    model.invoke(EASY, config={"callbacks": [handler]})
    [row] = ledger.store.rollup([ledger.day()])
    r = ledger.reserve(model="gpt-4o-mini", input_tokens=1, max_output_tokens=1, request_id="x")
    ledger.commit(r, usage_of("small"), premium_model="gpt-4o")
    ledger.commit(r, usage_of("small"), premium_model="gpt-4o")  # a replay
    t = build_report(ledger, last_days=1).totals
    assert (t.routed_requests, t.routing_saved_usd) == (2, saving("small", "small"))
    assert row.values["routed_requests"] == 1


def test_budget_middleware_around_a_router_model_charges_the_tier_that_answered(ledger: Ledger) -> None:
    agent = create_agent(RouterChatModel(metered_tiers()), middleware=[BudgetMiddleware(ledger, user="u")])
    agent.invoke({"messages": [HumanMessage(EASY)]})
    assert charged_models(ledger) == {"gpt-4o-mini": 1}  # reserved on gpt-4o, charged on the tier
    t = build_report(ledger, last_days=1).totals
    assert (t.routed_requests, t.routing_saved_usd) == (1, saving("small"))


@pytest.mark.parametrize("order", ["routing-outer", "budget-outer"])
async def test_budget_middleware_with_routing_middleware(ledger: Ledger, order: str) -> None:
    t = metered_tiers()
    routing, budget = RoutingMiddleware(t), BudgetMiddleware(ledger)
    middleware = [routing, budget] if order == "routing-outer" else [budget, routing]
    agent = create_agent(t["small"], middleware=middleware)
    agent.invoke({"messages": [HumanMessage(EASY)]})
    await agent.ainvoke({"messages": [HumanMessage(HARD)]})
    routed = build_report(ledger, last_days=1)
    tiers_called = [
        next(tier for tier, m in MODELS.items() if m == row.key)
        for row in routed.breakdown("model").rows
        for _ in range(row.requests)
    ]
    assert sorted(tiers_called) != ["small", "small"]  # the hard prompt went up
    assert routed.totals.requests == routed.totals.routed_requests == 2
    assert routed.totals.routing_saved_usd == saving(*tiers_called)


def unnamed_tiers() -> dict[str, GenericFakeChatModel]:
    """Tier models that do not name their model (the router's ``models=`` names them)."""
    return {t: GenericFakeChatModel(messages=iter([reply(t)] * 3)) for t in ("small", "large")}


UNNAMED = {"small": "gpt-4o-mini", "large": "gpt-4o"}


@pytest.mark.parametrize("handler_type", [BudgetCallbackHandler, AsyncBudgetCallbackHandler])
async def test_a_routed_call_is_charged_on_its_tier_model_not_the_handlers(
    ledger: Ledger, handler_type: type[BudgetCallbackHandler]
) -> None:
    # The handler must name a model here (the tier models do not name theirs): it stays the
    # default for unrouted calls, but a routed call is charged on the model its route names.
    handler = handler_type(ledger, model="gpt-4o-mini")
    model = RouterChatModel(unnamed_tiers(), models=UNNAMED)
    config = {"callbacks": [handler]}
    if handler_type is AsyncBudgetCallbackHandler:
        await model.ainvoke(EASY, config=config)
        await model.ainvoke(EASY, config=config, force_tier="large")
    else:
        model.invoke(EASY, config=config)
        model.invoke(EASY, config=config, force_tier="large")
    assert charged_models(ledger) == {"gpt-4o-mini": 1, "gpt-4o": 1}
    t = build_report(ledger, last_days=1).totals
    expected = cost_of(usage_of("small"), "gpt-4o-mini") + cost_of(usage_of("large"), "gpt-4o")
    assert t.cost_usd == expected
    assert t.routing_saved_usd == saving("small", "large") == saving("small")


def test_an_unrouted_call_is_still_charged_on_the_handlers_model(ledger: Ledger) -> None:
    handler = BudgetCallbackHandler(ledger, model="gpt-4o")
    GenericFakeChatModel(messages=iter([reply("small")])).invoke(EASY, config={"callbacks": [handler]})
    assert charged_models(ledger) == {"gpt-4o": 1}


def test_a_fallback_is_charged_on_the_model_that_answered(ledger: Ledger) -> None:
    failing = TierModel(model_name="gpt-4o", fail_with=ProviderError(429))
    backup = TierModel(model_name="gpt-4.1", answers=[reply("large")])
    model = RouterChatModel(
        {"small": TierModel(answers=[reply("small")]), "large": failing}, fallbacks={"large": [backup]}
    )
    handler = BudgetCallbackHandler(ledger, model="gpt-4o-mini")
    answer = model.invoke(EASY, config={"callbacks": [handler]}, force_tier="large")
    assert answer.response_metadata["tokenbudget_route"]["answered_by"] == "gpt-4.1"
    assert charged_models(ledger) == {"gpt-4.1": 1}  # the failed gpt-4o attempt was released
    assert build_report(ledger, last_days=1).totals.cost_usd == cost_of(usage_of("large"), "gpt-4.1")


def test_a_call_routed_by_the_routing_middleware_is_charged_on_its_tier_model(ledger: Ledger) -> None:
    """The middleware puts no route in the run's metadata: the handler reads the route in force."""
    handler = BudgetCallbackHandler(ledger, model="gpt-4o-mini")
    t = unnamed_tiers()
    agent = create_agent(t["small"], middleware=[RoutingMiddleware(t, models=UNNAMED)])
    agent.invoke({"messages": [HumanMessage(HARD)]}, config={"callbacks": [handler]})
    agent.invoke({"messages": [HumanMessage(EASY)]}, config={"callbacks": [handler]})
    assert charged_models(ledger) == {"gpt-4o": 1, "gpt-4o-mini": 1}
    expected = cost_of(usage_of("large"), "gpt-4o") + cost_of(usage_of("small"), "gpt-4o-mini")
    assert build_report(ledger, last_days=1).totals.cost_usd == expected
