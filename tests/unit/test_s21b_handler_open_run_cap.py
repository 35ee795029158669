"""Past the open-run cap, the handler forgets cancelled calls it released already before a live
call still waiting for its end: the live call is charged when it ends (review s21 handler,
finding 7). Real LangChain ``ainvoke`` calls on a fake chat model, cancelled as a timeout does."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

import langchain_tokenbudget.budget_callback as budget_callback
from langchain_tokenbudget import AsyncBudgetCallbackHandler
from tokenbudget_core import Usage, cost_of
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report

CAP = 40


class Waiting(BaseChatModel):
    """Answers a call once ``gate`` is set (never, for the calls the test cancels)."""

    model_name: str = "gpt-4o"
    gate: Any = None
    entered: int = 0

    @property
    def _llm_type(self) -> str:
        return "waiting-fake"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        raise NotImplementedError

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self.entered += 1
        await self.gate.wait()
        usage = {"input_tokens": 100, "output_tokens": 20, "total_tokens": 120}
        message = AIMessage("ok", usage_metadata=usage)  # type: ignore[arg-type]
        return ChatResult(generations=[ChatGeneration(message=message)])


async def _entered(model: Waiting, n: int) -> None:
    while model.entered < n:
        await asyncio.sleep(0)


def test_cancelled_calls_past_the_cap_do_not_push_out_a_live_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(budget_callback, "_MAX_OPEN", CAP)  # the cap (10,000), made small

    async def main() -> Ledger:
        ledger = Ledger("memory://", policy=BudgetPolicy(daily_usd="10"))
        handler = AsyncBudgetCallbackHandler(ledger, max_output_tokens=100)
        live_model = Waiting(gate=asyncio.Event())
        live = asyncio.create_task(live_model.ainvoke("a long question", config={"callbacks": [handler]}))
        await _entered(live_model, 1)
        stuck = Waiting(gate=asyncio.Event())
        for _ in range(8):  # waves of a quarter of the cap, cancelled: past the cap twice over
            tasks = [
                asyncio.create_task(stuck.ainvoke("hi", config={"callbacks": [handler]}))
                for _ in range(CAP // 4)
            ]
            await _entered(stuck, stuck.entered + CAP // 4)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        live_model.gate.set()
        await live
        return ledger

    ledger = asyncio.run(main())
    totals = build_report(ledger).totals
    assert (totals.requests, totals.input_tokens, totals.output_tokens) == (1, 100, 20)
    assert ledger.state().used["daily_usd"] == cost_of(Usage(input_tokens=100, output_tokens=20), "gpt-4o")
