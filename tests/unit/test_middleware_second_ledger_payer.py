"""``BudgetMiddleware`` on a per-tenant ledger and a ``BudgetCallbackHandler`` on a second, global
ledger with its own feature: the middleware never puts its payer in force over the model call,
so the global handler still charges (and refuses) its own feature. Real agent, fake chat model."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from langchain_tokenbudget import BudgetCallbackHandler, BudgetMiddleware
from tokenbudget_core import Usage, attribute
from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget
from tokenbudget_core.errors import BudgetExceededError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report


class Echo(BaseChatModel):
    model_name: str = "gpt-4o-mini"
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "echo-fake"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self.calls += 1
        usage = {"input_tokens": 100, "output_tokens": 10, "total_tokens": 110}
        message = AIMessage("echo", usage_metadata=usage, response_metadata={"model_name": self.model_name})
        return ChatResult(generations=[ChatGeneration(message=message)])


def _ledgers(spent_out: bool) -> tuple[Ledger, Ledger]:
    tenant = Ledger("memory://")
    glob = Ledger(
        "memory://", policy=BudgetPolicy(features={"all-agents": FeatureBudget(feature_daily_usd=Decimal(1))})
    )
    if spent_out:
        with attribute(feature="all-agents"):
            glob.record(Usage(input_tokens=10_000_000, output_tokens=10), model="gpt-4o-mini")
    return tenant, glob


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_the_global_handler_refuses_its_spent_feature(mode: str) -> None:
    tenant, glob = _ledgers(spent_out=True)
    model = Echo()
    middleware = BudgetMiddleware(
        tenant, model="gpt-4o-mini", feature="support", user="u-1", max_output_tokens=100
    )
    agent = create_agent(model, tools=[], middleware=[middleware])
    handler = BudgetCallbackHandler(glob, model="gpt-4o-mini", feature="all-agents", user="everyone")
    config: Any = {"callbacks": [handler]}
    state: Any = {"messages": [("user", "hi")]}
    if mode == "sync":
        with pytest.raises(BudgetExceededError):
            agent.invoke(state, config=config)
    else:
        with pytest.raises(BudgetExceededError):
            asyncio.run(agent.ainvoke(state, config=config))
    assert model.calls == 0  # nothing was sent


def test_each_ledger_charges_its_own_payer() -> None:
    tenant, glob = _ledgers(spent_out=False)
    model = Echo()
    middleware = BudgetMiddleware(
        tenant, model="gpt-4o-mini", feature="support", user="u-1", max_output_tokens=100
    )
    agent = create_agent(model, tools=[], middleware=[middleware])
    handler = BudgetCallbackHandler(glob, model="gpt-4o-mini", feature="all-agents", user="everyone")
    state: Any = {"messages": [("user", "hi")]}
    agent.invoke(state, config={"callbacks": [handler]})
    assert {r.key for r in build_report(glob).breakdown("feature").rows} == {"all-agents"}
    assert {r.key for r in build_report(tenant).breakdown("feature").rows} == {"support"}
