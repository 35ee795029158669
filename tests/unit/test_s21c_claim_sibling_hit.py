"""A failed sync multi-prompt generate() settles a prompt the TokenBudgetLLMCache answered as the
hit it was, not as a sent prompt charged an estimate (review s21r finding 1)."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from langchain_tokenbudget import BudgetCallbackHandler, TokenBudgetLLMCache
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report
from tokenbudget_core.response_cache import ExactCache

USAGE = {"input_tokens": 100, "output_tokens": 10, "total_tokens": 110}


class Private(BaseChatModel):
    """Answers "for <user>" (the user its run's metadata names); "boom" fails (a provider 500)."""

    model_name: str = "gpt-4o-mini"
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "private"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        if messages[-1].content == "boom":
            raise RuntimeError("provider 500")
        self.calls += 1
        message = AIMessage(
            f"for {(run_manager.metadata or {}).get('user_id')}", usage_metadata=USAGE,  # type: ignore[arg-type]
            response_metadata={"model_name": self.model_name, "finish_reason": "stop"},
        )  # fmt: skip
        return ChatResult(generations=[ChatGeneration(message=message)])


def test_a_failed_generate_settles_a_prompt_the_cache_answered_as_a_hit() -> None:
    ledger = Ledger("memory://")
    model = Private(cache=TokenBudgetLLMCache(ExactCache(ledger=ledger)))
    handler = BudgetCallbackHandler(ledger)
    meta = {"feature": "chat", "user_id": "u-1"}
    model.invoke("cached question", config={"callbacks": [handler], "metadata": meta})
    before = next(r for r in build_report(ledger).breakdown("user").rows if r.key == "u-1")
    with pytest.raises(RuntimeError, match="provider 500"):
        model.generate(
            [[HumanMessage("cached question")], [HumanMessage("boom")]], callbacks=[handler], metadata=meta
        )
    row = next(r for r in build_report(ledger).breakdown("user").rows if r.key == "u-1")
    assert model.calls == 1  # the cached prompt was not sent
    assert row.cost_usd == before.cost_usd  # nothing charged for it
    assert (row.requests, row.cache_hits, row.input_tokens) == (2, 1, 100)
