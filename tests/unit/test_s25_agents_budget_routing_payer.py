"""Budget-aware routing decides for the payer BudgetMiddleware charges when that payer comes from
defaults: ``RoutingMiddleware(user=/feature=)`` and ``RouterChatModel(user=/feature=)``, with the
same precedence as ``BudgetMiddleware`` (context, metadata, configurable, tags, then defaults)."""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from langchain_tokenbudget import BudgetMiddleware, RouterChatModel, RoutingMiddleware
from tokenbudget_core import Usage
from tokenbudget_core.attribution import attribute
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger

HARD = (
    "Design a migration plan for our sharded Postgres cluster, debug its replication lag, "
    "and prove the failover is safe under partitions."
)


class _Tier(BaseChatModel):
    model_name: str
    calls: int = 0

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self.calls += 1
        usage = {"input_tokens": 400, "output_tokens": 10, "total_tokens": 410}
        reply = AIMessage(
            self.model_name, usage_metadata=usage, response_metadata={"model_name": self.model_name}
        )  # type: ignore[arg-type]
        return ChatResult(generations=[ChatGeneration(message=reply)])

    def bind_tools(self, tools: Any, **kw: Any) -> Any:
        return self

    @property
    def _llm_type(self) -> str:
        return "tier"


def _ledger_with_u1_at_75_percent() -> Ledger:
    ledger = Ledger("memory://", policy=BudgetPolicy(user_daily_usd="0.10"))
    with attribute(user="u1"):
        r = ledger.reserve(model="gpt-4o", input_tokens=30000, max_output_tokens=1)
        ledger.commit(r, Usage(input_tokens=30000, output_tokens=1))  # $0.075 of $0.10
    return ledger


def test_routing_middleware_user_default_steps_down_for_the_payer_charged() -> None:
    ledger = _ledger_with_u1_at_75_percent()
    small, large = _Tier(model_name="gpt-4o-mini"), _Tier(model_name="gpt-4o")
    routing = RoutingMiddleware({"small": small, "large": large}, ledger=ledger, user="u1")
    budget = BudgetMiddleware(ledger, user="u1", max_output_tokens=100)
    agent = create_agent(_Tier(model_name="gpt-4o"), middleware=[routing, budget])
    reply = agent.invoke({"messages": [("user", HARD)]})["messages"][-1]
    route = reply.response_metadata["tokenbudget_route"]
    assert route["tier"] == "small"
    assert route["budget_step"] == "smaller_context"
    assert (small.calls, large.calls) == (1, 0)


@pytest.mark.asyncio
async def test_routing_middleware_metadata_payer_wins_over_the_default() -> None:
    ledger = _ledger_with_u1_at_75_percent()
    small, large = _Tier(model_name="gpt-4o-mini"), _Tier(model_name="gpt-4o")
    routing = RoutingMiddleware({"small": small, "large": large}, ledger=ledger, user="u1")
    agent = create_agent(
        _Tier(model_name="gpt-4o"),
        middleware=[routing, BudgetMiddleware(ledger, user="u1", max_output_tokens=100)],
    )
    state = await agent.ainvoke(
        {"messages": [("user", HARD)]}, {"metadata": {"user": "u2"}}
    )  # u2: nothing used
    route = state["messages"][-1].response_metadata["tokenbudget_route"]
    assert (route["tier"], route["budget_step"]) == ("large", "normal")


def test_router_chat_model_user_default_steps_down_for_the_payer_charged() -> None:
    ledger = _ledger_with_u1_at_75_percent()
    small, large = _Tier(model_name="gpt-4o-mini"), _Tier(model_name="gpt-4o")
    router = RouterChatModel({"small": small, "large": large}, ledger=ledger, user="u1")
    agent = create_agent(router, middleware=[BudgetMiddleware(ledger, user="u1", max_output_tokens=100)])
    reply = agent.invoke({"messages": [("user", HARD)]})["messages"][-1]
    assert reply.response_metadata["tokenbudget_route"]["tier"] == "small"
    assert (small.calls, large.calls) == (1, 0)


def test_bad_payer_default_is_named() -> None:
    tiers = {"small": _Tier(model_name="gpt-4o-mini"), "large": _Tier(model_name="gpt-4o")}
    with pytest.raises(InvalidInputError) as e:
        RoutingMiddleware(tiers, user="")
    assert e.value.field == "user"
