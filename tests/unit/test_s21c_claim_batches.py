"""The claims of a multi-prompt chat call: every prompt of a generate()/agenerate() is scoped and
recorded on the run's payer however many prompts it has (no claim of a call in progress is
dropped, review s21r finding 5); a cache hit is recorded in every budget handler's ledger
(finding 6)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from echo_chat import Private
from langchain_core.messages import BaseMessage, HumanMessage

from langchain_tokenbudget import AsyncBudgetCallbackHandler, BudgetCallbackHandler, TokenBudgetLLMCache
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report
from tokenbudget_core.response_cache import ExactCache

HANDLERS = [BudgetCallbackHandler, AsyncBudgetCallbackHandler]


def _rows(ledger: Ledger) -> dict[str | None, tuple[int, int]]:
    return {r.key: (r.requests, r.cache_hits) for r in build_report(ledger).breakdown("user").rows}


@pytest.mark.parametrize("how", ["generate", "agenerate"])
def test_every_prompt_of_a_call_past_64_prompts_is_scoped_by_the_runs_payer(how: str) -> None:
    ledger = Ledger("memory://")
    model = Private(cache=TokenBudgetLLMCache(ExactCache(ledger=ledger)))
    handler = BudgetCallbackHandler(ledger)
    prompts: list[list[BaseMessage]] = [[HumanMessage(f"question {i}")] for i in range(70)]

    def ask(user: str) -> list[str]:
        meta = {"feature": "chat", "user_id": user}
        if how == "generate":
            out = model.generate(prompts, callbacks=[handler], metadata=meta)
        else:
            out = asyncio.run(model.agenerate(prompts, callbacks=[handler], metadata=meta))
        return [str(g[0].text) for g in out.generations]

    assert ask("u-1") == ["for u-1"] * 70
    assert ask("u-2") == ["for u-2"] * 70  # none of u-1's answers
    assert model.calls == 140
    assert _rows(ledger) == {"u-1": (70, 0), "u-2": (70, 0)}


@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
@pytest.mark.parametrize("cache_ledger", ["first", "second"])
@pytest.mark.parametrize("handler_class", HANDLERS)
def test_a_hit_is_recorded_in_each_budget_handlers_ledger(
    handler_class: type, cache_ledger: str, how: str
) -> None:
    first, second = Ledger("memory://"), Ledger("memory://")
    model = Private(
        cache=TokenBudgetLLMCache(ExactCache(ledger=first if cache_ledger == "first" else second))
    )
    config: Any = {
        "callbacks": [handler_class(first), handler_class(second)],
        "metadata": {"feature": "chat", "user_id": "u-1"},
    }
    for _ in range(2):
        if how == "invoke":
            model.invoke("q", config=config)
        else:
            asyncio.run(model.ainvoke("q", config=config))
    assert model.calls == 1
    assert _rows(first) == {"u-1": (2, 1)}
    assert _rows(second) == {"u-1": (2, 1)}
