"""A cached answer is not a model call: the budget handler charges nothing for it and records the hit."""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

import pytest
from langchain_core.caches import InMemoryCache
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatResult
from pydantic import Field

from langchain_tokenbudget import AsyncBudgetCallbackHandler, BudgetCallbackHandler, TokenBudgetLLMCache
from tokenbudget_core import attribute, build_report, cost_of
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.response_cache import ExactCache
from tokenbudget_core.usage import Usage

USAGE = {"input_tokens": 1200, "output_tokens": 80, "total_tokens": 1280}
ONE_CALL = cost_of(Usage(input_tokens=1200, output_tokens=80), "gpt-4o-mini")


class CountingModel(GenericFakeChatModel):
    """A fake that names its model (so caches key on it) and counts the calls that reach it."""

    model_name: str = "gpt-4o-mini"
    calls: int = Field(default=0)

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name}

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        self.calls += 1
        return super()._generate(messages, *args, **kwargs)


def model(cache: Any) -> CountingModel:
    reply = AIMessage("Paris.", usage_metadata=USAGE, response_metadata={"model_name": "gpt-4o-mini"})  # type: ignore[arg-type]
    return CountingModel(messages=itertools.repeat(reply), cache=cache)


def totals(ledger: Ledger) -> tuple[int, int, Decimal, Decimal]:
    t = build_report(ledger, last_days=1).totals
    return t.requests, t.cache_hits, t.cost_usd, t.saved_usd


@pytest.mark.parametrize("kind", ["tokenbudget", "tokenbudget-recording", "langchain"])
def test_second_identical_call_is_a_hit_not_a_charge(kind: str) -> None:
    ledger = Ledger("memory://")
    cache: Any = {
        "tokenbudget": TokenBudgetLLMCache(ExactCache()),
        "tokenbudget-recording": TokenBudgetLLMCache(ExactCache(ledger=ledger)),  # the cache records hits
        "langchain": InMemoryCache(),
    }[kind]
    m = model(cache)
    handler = BudgetCallbackHandler(ledger, model="gpt-4o-mini")
    with attribute(feature="chat", user="u-1"):
        for _ in range(2):
            assert m.invoke("Capital of France?", config={"callbacks": [handler]}).content == "Paris."
    assert m.calls == 1
    # One real call charged once; one hit, charged nothing, recorded once with what it saved.
    assert totals(ledger) == (2, 1, ONE_CALL, ONE_CALL)
    state = ledger.state(feature="chat", user="u-1")
    assert state.step == "normal"


async def test_async_handler_treats_hits_the_same() -> None:
    ledger = Ledger("memory://")
    m = model(TokenBudgetLLMCache(ExactCache()))
    handler = AsyncBudgetCallbackHandler(ledger, model="gpt-4o-mini")
    for _ in range(3):
        await m.ainvoke("Capital of France?", config={"callbacks": [handler]})
    assert m.calls == 1
    assert totals(ledger) == (3, 2, ONE_CALL, 2 * ONE_CALL)


class AgentModel(CountingModel):
    """A :class:`CountingModel` an agent can bind (no tools are used)."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> AgentModel:
        return self


@pytest.mark.parametrize("kind", ["tokenbudget", "tokenbudget-recording", "langchain"])
@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
def test_an_agents_cached_answer_is_a_hit_not_a_charge(kind: str, how: str) -> None:
    """BudgetMiddleware, like the handlers: a cached answer called no model, so the run and the
    user are charged nothing for it and the hit is recorded once (it was charged as a call)."""
    import asyncio

    from langchain.agents import create_agent
    from langgraph.checkpoint.memory import InMemorySaver

    from langchain_tokenbudget import BudgetMiddleware

    ledger = Ledger("memory://")
    cache: Any = {
        "tokenbudget": TokenBudgetLLMCache(ExactCache()),
        "tokenbudget-recording": TokenBudgetLLMCache(ExactCache(ledger=ledger)),
        "langchain": InMemoryCache(),
    }[kind]
    reply = AIMessage("Paris.", usage_metadata=USAGE, response_metadata={"model_name": "gpt-4o-mini"})  # type: ignore[arg-type]
    m = AgentModel(messages=itertools.repeat(reply), cache=cache)
    budget = BudgetMiddleware(
        ledger, model="gpt-4o-mini", user="u", max_output_tokens=100, max_run_tokens=100_000
    )
    agent = create_agent(m, middleware=[budget], checkpointer=InMemorySaver())
    run_tokens = []
    for i in range(3):  # the same question in three conversations
        payload = {"messages": [("user", "Capital of France?")]}
        config: Any = {"configurable": {"thread_id": f"t{i}"}}
        agent.invoke(payload, config) if how == "invoke" else asyncio.run(agent.ainvoke(payload, config))
        run_tokens.append(agent.get_state(config).values.get("tokenbudget_run_tokens", 0))
    assert m.calls == 1
    assert run_tokens == [1280, 0, 0]
    requests, hits, cost, saved = totals(ledger)
    assert (requests, hits, cost) == (3, 2, ONE_CALL)
    assert saved == 2 * ONE_CALL
