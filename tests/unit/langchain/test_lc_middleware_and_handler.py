"""A BudgetMiddleware and a BudgetCallbackHandler seeing the same agent model call (a handler in
the run's config, as the README shows for any run): the call is charged once per ledger."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from langchain_tokenbudget import (
    AsyncBudgetCallbackHandler,
    BudgetCallbackHandler,
    BudgetMiddleware,
    RouterChatModel,
    RoutingMiddleware,
)
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report


class Named(GenericFakeChatModel):
    """A fake chat model that names its model, as provider models do."""

    model_name: str = "gpt-4o-mini"


def reply() -> AIMessage:
    return AIMessage("Paris.", usage_metadata={"input_tokens": 100, "output_tokens": 10, "total_tokens": 110})


@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
@pytest.mark.parametrize("model_class", [GenericFakeChatModel, Named])
def test_a_call_the_middleware_charges_is_not_charged_again_by_a_handler_of_its_ledger(
    how: str, model_class: type[GenericFakeChatModel]
) -> None:
    ledger, other = Ledger("memory://"), Ledger("memory://")
    agent = create_agent(
        model_class(messages=iter([reply()])), middleware=[BudgetMiddleware(ledger, model="gpt-4o")]
    )
    handler_class = BudgetCallbackHandler if how == "invoke" else AsyncBudgetCallbackHandler
    handlers: list[Any] = [handler_class(ledger, model="gpt-4o"), handler_class(other, model="gpt-4o")]
    config: Any = {"callbacks": handlers, "metadata": {"user": "alice", "feature": "qa"}}
    payload = {"messages": [("user", "Capital of France?")]}
    if how == "invoke":
        agent.invoke(payload, config=config)
    else:
        asyncio.run(agent.ainvoke(payload, config=config))
    assert build_report(ledger).totals.requests == 1
    assert build_report(other).totals.requests == 1  # another ledger's handler still charges it


def test_another_models_call_inside_the_middlewares_call_is_still_charged_by_the_handler() -> None:
    ledger = Ledger("memory://")
    guard = Named(messages=iter([reply()]), model_name="gpt-4.1-nano")

    class Guarded(GenericFakeChatModel):
        def _generate(self, *args: Any, **kwargs: Any) -> Any:
            guard.invoke("is this allowed?")  # a call of its own, to another model
            return super()._generate(*args, **kwargs)

    agent = create_agent(
        Guarded(messages=iter([reply()])), middleware=[BudgetMiddleware(ledger, model="gpt-4o")]
    )
    agent.invoke({"messages": [("user", "Hi")]}, config={"callbacks": [BudgetCallbackHandler(ledger)]})
    rows = {
        r.rollup_key.rsplit("/", 1)[-1]: r.values["requests"] for r in ledger.store.rollup([ledger.day()])
    }
    assert rows == {"gpt-4o": 1, "gpt-4.1-nano": 1}


@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("setup", ["router-model", "routing-middleware-inside"])
def test_a_routed_call_the_middleware_charges_is_not_charged_again_by_the_handler(
    setup: str, hard: bool
) -> None:
    ledger = Ledger("memory://")
    tiers = {
        "small": Named(messages=iter([reply()]), model_name="gpt-4o-mini"),
        "large": Named(messages=iter([reply()]), model_name="gpt-4o"),
    }
    budget = BudgetMiddleware(ledger)
    if setup == "router-model":
        agent = create_agent(RouterChatModel(tiers), middleware=[budget])
    else:  # the agent's model is the small tier; the route may go to the large one
        agent = create_agent(tiers["small"], middleware=[budget, RoutingMiddleware(tiers)])
    prompt = "Analyze step by step and prove, in detail, the trade-offs of " + "distributed consensus " * 40
    prompt = prompt if hard else "Hi"
    agent.invoke({"messages": [("user", prompt)]}, config={"callbacks": [BudgetCallbackHandler(ledger)]})
    assert build_report(ledger).totals.requests == 1
