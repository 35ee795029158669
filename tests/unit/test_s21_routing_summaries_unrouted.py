"""A ``RoutingMiddleware`` leaves the package's own calls alone: the summaries a
``ContextWindowMiddleware`` outside it makes (under ``without_route()`` / ``overhead("summariser")``)
go to the ``summariser`` the app configured, charged there with no routing, whatever the order of
the two middleware.

Real ``create_agent`` runs over fake chat models that count their calls and report usage.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from langchain_tokenbudget import BudgetMiddleware, ContextWindowMiddleware, RoutingMiddleware
from tokenbudget_core import BudgetPolicy, FeatureBudget, Ledger
from tokenbudget_core.attribution import overhead
from tokenbudget_core.reports import build_report
from tokenbudget_core.routing import TierRouter, own_call, using_route, without_route


class Counting(BaseChatModel):
    """Answers ``echo: <last text>`` with reported usage, counting its calls."""

    model_name: str
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "counting-fake"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:  # fmt: skip
        self.calls += 1
        reply = AIMessage(
            f"echo: {messages[-1].text}",
            usage_metadata={"input_tokens": 100, "output_tokens": 10, "total_tokens": 110},
            response_metadata={"model_name": self.model_name, "finish_reason": "stop"},
        )
        return ChatResult(generations=[ChatGeneration(message=reply)])

    async def _agenerate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                         **kwargs: Any) -> ChatResult:  # fmt: skip
        return self._generate(messages, stop, run_manager, **kwargs)


TURNS = 6


@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
@pytest.mark.parametrize("order", ["context-routing-budget", "routing-context-budget"])
def test_summaries_go_to_the_configured_summariser_unrouted(order: str, how: str) -> None:
    ledger = Ledger("memory://", policy=BudgetPolicy(features={"chat": FeatureBudget(user_daily_usd="5")}))
    small, large = Counting(model_name="gpt-4o-mini"), Counting(model_name="gpt-4o")
    summariser = Counting(model_name="gpt-4.1-nano")
    routing = RoutingMiddleware({"small": small, "large": large}, ledger=ledger, max_output_tokens=200)
    context = ContextWindowMiddleware("gpt-4o", max_tokens=600, strategy="summarise", summariser=summariser)
    budget = BudgetMiddleware(ledger, max_output_tokens=200)
    middleware = [context, routing] if order.startswith("context") else [routing, context]
    agent = create_agent(large, tools=[], middleware=[*middleware, budget])
    history: list[Any] = []
    config: Any = {"metadata": {"feature": "chat", "user": "u-1"}}
    for i in range(TURNS):
        history.append(HumanMessage(f"question {i}: what is the storage limit? " + "detail " * 60))
        payload = {"messages": history}
        state = (
            agent.invoke(payload, config) if how == "invoke" else asyncio.run(agent.ainvoke(payload, config))
        )
        history = state["messages"]

    assert summariser.calls > 0  # the history outgrew the window: summaries were written...
    assert small.calls + large.calls == TURNS  # ...by the summariser, not by a tier model
    replies = [m for m in history if isinstance(m, AIMessage)]
    assert [m.response_metadata["tokenbudget_route"]["tier"] for m in replies] == ["small"] * TURNS
    report = build_report(ledger)
    assert report.totals.overhead_requests == summariser.calls
    assert report.totals.routed_requests == TURNS  # the agent's calls only
    by_model = {row.key: row for row in report.breakdown("model").rows}
    assert by_model["gpt-4.1-nano"].requests == summariser.calls
    assert (by_model["gpt-4.1-nano"].routed_requests, by_model["gpt-4.1-nano"].routing_saved_usd) == (
        0,
        Decimal(0),
    )
    assert report.totals.routing_saved_usd == by_model["gpt-4o-mini"].routing_saved_usd > 0


def test_own_call_marks_without_route_and_overhead_blocks() -> None:
    decision = TierRouter({"small": "gpt-4o-mini", "large": "gpt-4o"}).route("Hi", force_tier="large")
    assert own_call() is False
    with using_route(decision):
        assert own_call() is False
        with without_route():
            assert own_call() is True
            with using_route(decision):  # a routed call made inside an own call is routed again
                assert own_call() is False
            assert own_call() is True
        assert own_call() is False
    with overhead("summariser"):
        assert own_call() is True

    async def in_task() -> bool:
        await asyncio.sleep(0)
        return own_call()

    with without_route():
        assert asyncio.run(in_task()) is True
    assert own_call() is False
