"""A call cancelled mid-flight (asyncio.timeout) after its TokenBudgetLLMCache lookup: the budget
handler closes the run's cache claim with its reservation (LangChain ends the run in no handler),
so no store can ever use it (review s21r lc finding 7, rule: a claim closes when its run is
cancelled)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult

from langchain_tokenbudget import AsyncBudgetCallbackHandler, BudgetCallbackHandler, TokenBudgetLLMCache
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.response_cache import ExactCache


class Hangs(BaseChatModel):
    """Never answers (until its task is cancelled)."""

    model_name: str = "gpt-4o-mini"

    @property
    def _llm_type(self) -> str:
        return "hangs"

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        raise NotImplementedError

    async def _agenerate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


@pytest.mark.parametrize("handler_class", [BudgetCallbackHandler, AsyncBudgetCallbackHandler])
def test_a_cancelled_calls_claim_is_closed(handler_class: type) -> None:
    handler = handler_class(Ledger("memory://"))
    model = Hangs(cache=TokenBudgetLLMCache(ExactCache()))

    async def main() -> None:
        async def call() -> None:
            await model.ainvoke("hello", config={"callbacks": [handler], "metadata": {"user_id": "u-1"}})

        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await asyncio.create_task(call())
        await asyncio.sleep(0)  # the task's done callbacks run
        claims = [run.claim for run in handler._runs.values()]  # (the loop still runs)
        assert claims
        assert all(c is not None and c.prompt is not None and not c.open for c in claims)

    asyncio.run(main())
