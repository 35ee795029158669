"""A RoutingMiddleware's route covers the agent's routed model call only, not the other model calls
made inside it (a ContextWindowMiddleware's summaries, a middleware's own guard call).

Real ``create_agent`` runs over fake tier models that report usage; the expected charges are
computed independently with ``cost_of``. Each run has a ``BudgetMiddleware`` (innermost, the
documented order) and a ``BudgetCallbackHandler`` attached, each on a ledger of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware.types import AgentMiddleware, AgentState, ModelRequest, ModelResponse
from langchain_core.messages import AIMessage, HumanMessage
from router_fakes import TierModel, tiers

from langchain_tokenbudget import (
    BudgetCallbackHandler,
    BudgetMiddleware,
    ContextWindowMiddleware,
    RoutingMiddleware,
)
from tokenbudget_core import Ledger, Usage
from tokenbudget_core.pricing import cost_of
from tokenbudget_core.reports import build_report

TIER_USAGE = {"small": (50, 5), "large": (400, 20)}
SUMMARY_USAGE = (1_000, 50)
MODELS = {"small": "gpt-4o-mini", "large": "gpt-4o"}


def metered(text: str, usage: tuple[int, int]) -> AIMessage:
    i, o = usage
    return AIMessage(text, usage_metadata={"input_tokens": i, "output_tokens": o, "total_tokens": i + o})


def usage(i_o: tuple[int, int]) -> Usage:
    return Usage(input_tokens=i_o[0], output_tokens=i_o[1])


COUNTERS = ("requests", "routed_requests", "routing_saved_nanos")


def rows(ledger: Ledger) -> dict[str, tuple[int, ...]]:
    """Today's requests, routed requests and routing savings by model (a counter never set is 0)."""
    return {
        r.rollup_key.rsplit("/", 1)[-1]: tuple(r.values.get(k, 0) for k in COUNTERS)
        for r in ledger.store.rollup([ledger.day()])
    }


def routed_tiers() -> dict[str, TierModel]:
    t = tiers(**{tier: [metered(f"{tier} answer", u)] for tier, u in TIER_USAGE.items()})
    del t["medium"]
    return t


HISTORY = [HumanMessage(f"fact {i}: " + "blah " * 30) for i in range(12)]


@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
@pytest.mark.parametrize("tier", ["large", "small"])
def test_summary_calls_inside_a_route_are_charged_on_the_summariser_and_not_routed(
    tier: str, how: str
) -> None:
    by_middleware, by_handler = Ledger("memory://"), Ledger("memory://")
    summariser = TierModel(model_name="gpt-4o-mini", answers=[metered("the summary", SUMMARY_USAGE)])
    t = routed_tiers()
    middleware = [
        RoutingMiddleware(t),
        ContextWindowMiddleware("gpt-4o", max_tokens=400, strategy="summarise", summariser=summariser),
        BudgetMiddleware(by_middleware),
    ]
    agent = create_agent(t["small"], middleware=middleware)
    config: Any = {
        "configurable": {"force_tier": tier},
        "metadata": {"feature": "f", "user": "u"},
        "callbacks": [BudgetCallbackHandler(by_handler)],
    }
    payload = {"messages": HISTORY}
    out = agent.invoke(payload, config) if how == "invoke" else asyncio.run(agent.ainvoke(payload, config))
    assert out["messages"][-1].response_metadata["tokenbudget_route"]["model"] == MODELS[tier]
    summaries = len(summariser.received)
    assert summaries >= 1
    assert len(t[tier].received) == 1

    one_summary = cost_of(usage(SUMMARY_USAGE), "gpt-4o-mini")  # the summariser's model, not gpt-4o
    tier_cost = cost_of(usage(TIER_USAGE[tier]), MODELS[tier])
    saved = cost_of(usage(TIER_USAGE[tier]), "gpt-4o") - tier_cost
    for ledger in (by_middleware, by_handler):
        report = build_report(ledger, last_days=1)
        assert report.totals.requests == summaries + 1
        assert report.totals.overhead_usd == summaries * one_summary
        assert report.totals.cost_usd == summaries * one_summary + tier_cost
        if tier == "large":  # the summaries have a row of their own, never routed
            assert rows(ledger)["gpt-4o-mini"] == (summaries, 0, 0)
            assert rows(ledger)["gpt-4o"][0] == 1
    routed = build_report(by_middleware, last_days=1).totals
    assert (routed.routed_requests, routed.routing_saved_usd) == (1, saved)


class GuardMiddleware(AgentMiddleware[AgentState[Any], Any]):
    """Asks its own model (gpt-4.1-nano) whether the request is allowed before passing it on:
    a model call of its own, sent down the rest of the chain, inside the route."""

    def __init__(self, guard: TierModel) -> None:
        super().__init__()
        self.guard = guard

    def wrap_model_call(
        self, request: ModelRequest[Any], handler: Callable[[ModelRequest[Any]], ModelResponse[Any]]
    ) -> Any:
        handler(request.override(model=self.guard, tools=[]))
        return handler(request)

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> Any:
        await handler(request.override(model=self.guard, tools=[]))
        return await handler(request)


@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
def test_a_call_to_another_model_inside_the_route_is_not_the_routed_call(how: str) -> None:
    """BudgetMiddleware takes a call for the routed one only when it goes to the route's model."""
    ledger = Ledger("memory://")
    guard = TierModel(model_name="gpt-4.1-nano", answers=[metered("allowed", (30, 1))])
    t = routed_tiers()
    agent = create_agent(
        t["small"], middleware=[RoutingMiddleware(t), GuardMiddleware(guard), BudgetMiddleware(ledger)]
    )
    config: Any = {"configurable": {"force_tier": "large"}}
    payload = {"messages": [HumanMessage("hello")]}
    _ = agent.invoke(payload, config) if how == "invoke" else asyncio.run(agent.ainvoke(payload, config))
    assert rows(ledger) == {"gpt-4.1-nano": (1, 0, 0), "gpt-4o": (1, 1, 0)}
    report = build_report(ledger, last_days=1)
    expected = cost_of(usage((30, 1)), "gpt-4.1-nano") + cost_of(usage(TIER_USAGE["large"]), "gpt-4o")
    assert report.totals.cost_usd == expected
    assert report.totals.routing_saved_usd == Decimal(0)


def test_a_routed_call_is_reserved_and_charged_on_the_route_model_whatever_model_is_given() -> None:
    """``BudgetMiddleware(model=...)`` names the model of unrouted calls; the routed call goes to
    the tier model, and is charged there."""
    ledger = Ledger("memory://")
    t = routed_tiers()
    agent = create_agent(
        t["small"], middleware=[RoutingMiddleware(t), BudgetMiddleware(ledger, model="gpt-4o")]
    )
    agent.invoke({"messages": [HumanMessage("What is the capital of France?")]})
    assert len(t["small"].received) == 1
    [(model, (requests, routed, _))] = rows(ledger).items()
    assert (model, requests, routed) == ("gpt-4o-mini", 1, 1)
    saved = cost_of(usage(TIER_USAGE["small"]), "gpt-4o") - cost_of(usage(TIER_USAGE["small"]), "gpt-4o-mini")
    assert build_report(ledger, last_days=1).totals.routing_saved_usd == saved
