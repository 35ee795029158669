"""BudgetMiddleware(model=...) prices the agent's own model only: a summariser's or a fallback
model's calls are charged on their own model, and a reply that names the model that answered
(when the agent's model names none the registry knows) is charged on that model."""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import ModelFallbackMiddleware
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from langchain_tokenbudget import BudgetMiddleware, ContextWindowMiddleware
from tokenbudget_core.ledger import Ledger


class _Scripted(BaseChatModel):
    replies: list[Any]
    model_name: str | None = None
    i: int = 0

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        reply = self.replies[self.i]
        self.i += 1
        if isinstance(reply, Exception):
            raise reply
        return ChatResult(generations=[ChatGeneration(message=reply)])

    def bind_tools(self, tools: Any, **kw: Any) -> Any:
        return self

    @property
    def _llm_type(self) -> str:
        return "scripted"


def _ai(text: str, inp: int, out: int, model: str | None = None) -> AIMessage:
    usage = {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out}
    meta = {"model_name": model} if model else {}
    return AIMessage(text, usage_metadata=usage, response_metadata=meta)  # type: ignore[arg-type]


def _rows(ledger: Ledger) -> dict[str, dict[str, Any]]:
    return {r.rollup_key: dict(r.values) for r in ledger.store.rollup([ledger.day()])}


def test_summaries_are_charged_on_the_summariser_model_not_model_option() -> None:
    ledger = Ledger("memory://")
    summariser = _Scripted(
        replies=[_ai(f"summary {k}", 300, 40) for k in range(20)], model_name="gpt-4o-mini"
    )
    model = _Scripted(replies=[_ai(f"answer {k}", 500, 10) for k in range(20)], model_name="gpt-4o")
    context = ContextWindowMiddleware("gpt-4o", max_tokens=300, strategy="summarise", summariser=summariser)
    budget = BudgetMiddleware(ledger, model="gpt-4o", user="u1", feature="f", max_output_tokens=50)
    agent = create_agent(model, system_prompt="Be brief.", middleware=[context, budget])
    messages: list[tuple[str, str]] = []
    for turn in range(5):
        messages += [("user", f"turn {turn}: " + "blah " * 60), ("assistant", "ok")]
    agent.invoke({"messages": [*messages, ("user", "last")]})
    rows = _rows(ledger)
    assert summariser.i > 0
    mini = rows["f/u1/gpt-4o-mini"]
    assert mini["requests"] == summariser.i == mini["overhead_requests"]
    assert mini["cost_nanos"] == summariser.i * (300 * 150 + 40 * 600)
    assert rows["f/u1/gpt-4o"]["requests"] == 1


@pytest.mark.asyncio
async def test_fallback_model_call_is_charged_on_the_fallback_model() -> None:
    ledger = Ledger("memory://")
    primary = _Scripted(replies=[RuntimeError("503 overloaded")], model_name="gpt-4o")
    backup = _Scripted(replies=[_ai("from mini", 1000, 100)], model_name="gpt-4o-mini")
    budget = BudgetMiddleware(ledger, model="gpt-4o", user="u1", feature="f", max_output_tokens=200)
    agent = create_agent(primary, middleware=[ModelFallbackMiddleware(backup), budget])
    state = await agent.ainvoke({"messages": [("user", "hello")]})
    assert state["messages"][-1].content == "from mini"
    rows = _rows(ledger)
    assert "f/u1/gpt-4o" not in rows
    assert rows["f/u1/gpt-4o-mini"]["cost_nanos"] == 1000 * 150 + 100 * 600


def test_unnamed_agent_model_is_charged_on_the_model_its_reply_names() -> None:
    ledger = Ledger("memory://")
    model = _Scripted(replies=[_ai("hi", 1000, 100, model="gpt-4o-mini")])  # names no model itself
    budget = BudgetMiddleware(ledger, model="gpt-4o", user="u1", feature="f", max_output_tokens=200)
    create_agent(model, middleware=[budget]).invoke({"messages": [("user", "hello")]})
    rows = _rows(ledger)
    assert set(rows) == {"f/u1/gpt-4o-mini"}
    assert rows["f/u1/gpt-4o-mini"]["cost_nanos"] == 1000 * 150 + 100 * 600


def test_model_option_still_prices_an_agent_model_without_a_known_name() -> None:
    ledger = Ledger("memory://")
    model = _Scripted(replies=[_ai("hi", 1000, 100)], model_name="my-azure-deployment")
    budget = BudgetMiddleware(ledger, model="gpt-4o", user="u1", feature="f", max_output_tokens=200)
    create_agent(model, middleware=[budget]).invoke({"messages": [("user", "hello")]})
    assert _rows(ledger)["f/u1/gpt-4o"]["cost_nanos"] == 1000 * 2500 + 100 * 10000
