"""A sync multi-prompt chat ``generate([[a], [b], [c]])`` whose second prompt fails at the provider:
the first prompt (sent, billed) is charged a flagged estimate, the third (never sent) holds nothing
(review s21 handler, finding 3). ``agenerate`` ends every prompt itself: charged as reported."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

from langchain_tokenbudget import AsyncBudgetCallbackHandler, BudgetCallbackHandler
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report


class FailsSecond(BaseChatModel):
    """Fails on the prompt "b"; answers the others reporting 100 input and 20 output tokens."""

    model_name: str = "gpt-4o"
    sent: list[str] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "fake"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        text = str(messages[-1].content)
        self.sent.append(text)
        if text == "b":
            raise RuntimeError("provider error (HTTP 500)")
        usage = {"input_tokens": 100, "output_tokens": 20, "total_tokens": 120}
        message = AIMessage("ok", usage_metadata=usage)  # type: ignore[arg-type]
        return ChatResult(generations=[ChatGeneration(message=message)])


PROMPTS = [[HumanMessage(t)] for t in "abc"]


@pytest.mark.parametrize("handler_type", [BudgetCallbackHandler, AsyncBudgetCallbackHandler])
def test_sync_generate_charges_the_sent_prompt_and_releases_the_unsent_one(
    handler_type: type[BudgetCallbackHandler],
) -> None:
    ledger = Ledger("memory://", policy=BudgetPolicy(daily_usd="1"))
    handler = handler_type(ledger, max_output_tokens=100)
    model = FailsSecond(sent=[])
    with pytest.raises(RuntimeError, match="HTTP 500"):
        model.generate(PROMPTS, callbacks=[handler])
    assert model.sent == ["a", "b"]  # "a" billed by the provider, "c" never sent
    row = build_report(ledger).totals
    assert (row.requests, row.estimated_requests, row.output_tokens) == (1, 1, 0)
    assert row.input_tokens > 0
    assert ledger.state().used["daily_usd"] == row.cost_usd > 0  # nothing else held
    assert not handler._runs


@pytest.mark.parametrize("handler_type", [BudgetCallbackHandler, AsyncBudgetCallbackHandler])
def test_agenerate_charges_both_answered_prompts_as_reported(
    handler_type: type[BudgetCallbackHandler],
) -> None:
    ledger = Ledger("memory://", policy=BudgetPolicy(daily_usd="1"))
    handler = handler_type(ledger, max_output_tokens=100)
    model = FailsSecond(sent=[])
    with pytest.raises(RuntimeError, match="HTTP 500"):
        asyncio.run(model.agenerate(PROMPTS, callbacks=[handler]))
    row = build_report(ledger).totals
    assert (row.requests, row.estimated_requests, row.input_tokens, row.output_tokens) == (2, 0, 200, 40)
    assert ledger.state().used["daily_usd"] == row.cost_usd == Decimal("0.0009")
    assert not handler._runs
