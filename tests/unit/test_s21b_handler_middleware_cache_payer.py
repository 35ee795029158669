"""``create_agent`` + ``BudgetMiddleware(feature=, user=)`` on a model with a ``TokenBudgetLLMCache``:
the cache hit is recorded on the payer the middleware charges, so that payer's hit rate and
savings count it (review s21 saving, finding 3 for the middleware). Real agent, fake chat model."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from langchain_tokenbudget import BudgetMiddleware, TokenBudgetLLMCache
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report
from tokenbudget_core.response_cache import ExactCache


class Echo(BaseChatModel):
    model_name: str = "gpt-4o-mini"
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "echo-fake"

    def _reply(self, messages: list[BaseMessage]) -> ChatResult:
        self.calls += 1
        usage = {"input_tokens": 100, "output_tokens": 10, "total_tokens": 110}
        message = AIMessage(
            f"echo: {messages[-1].content}",
            usage_metadata=usage,  # type: ignore[arg-type]
            response_metadata={"model_name": self.model_name, "finish_reason": "stop"},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        return self._reply(messages)

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        return self._reply(messages)


@pytest.mark.parametrize("run_async", [False, True])
def test_a_cache_hit_under_budget_middleware_is_recorded_on_its_payer(run_async: bool) -> None:
    ledger = Ledger("memory://")
    model = Echo(cache=TokenBudgetLLMCache(ExactCache(ledger=ledger)))
    middleware = BudgetMiddleware(
        ledger, model="gpt-4o-mini", feature="chat", user="u-1", max_output_tokens=100
    )
    agent = create_agent(model, tools=[], middleware=[middleware])
    question: Any = {"messages": [("user", "How do I export?")]}
    for _ in range(2):
        if run_async:
            asyncio.run(agent.ainvoke(question))
        else:
            agent.invoke(question)
    assert model.calls == 1
    for dimension, payer in (("user", "u-1"), ("feature", "chat")):
        rows = {r.key: (r.requests, r.cache_hits) for r in build_report(ledger).breakdown(dimension).rows}
        assert rows == {payer: (2, 1)}
