"""Past a budget handler's cap of open runs (10,000; 100 here), the runs it forgets may still be
in flight: their cache lookups skip the cache (a refused run's raises its refusal), never sending
a refused call nor falling back to the shared scope. A flood of concurrent async calls, a real
ledger and a real ``TokenBudgetLLMCache``."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import pytest
from echo_chat import Echo
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from test_s21_handler_cache_hit_at_limit import PAYER, at_the_limit

import langchain_tokenbudget.budget_callback as budget_callback
from langchain_tokenbudget import AsyncBudgetCallbackHandler, BudgetCallbackHandler, TokenBudgetLLMCache
from tokenbudget_core.errors import BudgetExceededError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.response_cache import ExactCache

HANDLERS = [AsyncBudgetCallbackHandler, BudgetCallbackHandler]
CALLS = 120


@pytest.fixture(autouse=True)
def small_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(budget_callback, "_MAX_OPEN", 100)


class Who(BaseChatModel):
    """Answers with the private data of the user its run's metadata names."""

    model_name: str = "gpt-4o-mini"
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "who"

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        raise NotImplementedError

    async def _agenerate(
        self, messages: list[BaseMessage], *args: Any, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        self.calls += 1
        user = (run_manager.metadata or {}).get("user_id")
        usage: Any = {"input_tokens": 100, "output_tokens": 10, "total_tokens": 110}
        reply = AIMessage(
            f"private data of {user}", usage_metadata=usage, response_metadata={"model_name": "gpt-4o-mini"}
        )
        return ChatResult(generations=[ChatGeneration(message=reply)])


@pytest.mark.parametrize("handler_class", HANDLERS)
def test_a_flood_of_refused_calls_sends_none(handler_class: type) -> None:
    model = Echo()
    _, handler = at_the_limit(model, handler_class)
    config: Any = {**PAYER, "callbacks": [handler]}
    before = model.calls

    async def one(i: int) -> str:
        try:
            await model.ainvoke(f"question {i}", config=config)
        except BudgetExceededError:
            return "refused"
        return "sent"

    async def flood() -> list[str]:
        return await asyncio.gather(*(one(i) for i in range(CALLS)))

    assert asyncio.run(flood()) == ["refused"] * CALLS
    assert model.calls == before


@pytest.mark.parametrize("handler_class", HANDLERS)
def test_a_flood_of_calls_serves_each_user_their_own_answer(handler_class: type) -> None:
    ledger = Ledger("memory://")
    cache = TokenBudgetLLMCache(ExactCache(ledger=ledger))
    model = Who(cache=cache)
    handler = handler_class(ledger)
    users = [f"u-{i % 50}" for i in range(CALLS)]

    async def flood() -> list[Any]:
        return await asyncio.gather(
            *(
                model.ainvoke(
                    "What is my balance?",
                    config={"callbacks": [handler], "metadata": {"feature": "chat", "user_id": u}},
                )
                for u in users
            )
        )

    replies = asyncio.run(flood())
    assert [r.content for r in replies] == [f"private data of {u}" for u in users]
    # nothing was stored in the shared scope: a caller naming no payer gets no user's answer
    again = asyncio.run(Who(cache=cache).ainvoke("What is my balance?"))
    assert again.content == "private data of None"


@pytest.mark.parametrize("handler_class", HANDLERS)
def test_a_run_id_of_the_flood_reused_without_a_handler_is_not_refused(handler_class: type) -> None:
    model = Echo()
    _, handler = at_the_limit(model, handler_class)
    ids = [uuid.uuid4() for _ in range(CALLS)]

    async def one(i: int) -> None:
        with contextlib.suppress(BudgetExceededError):
            await model.ainvoke(f"question {i}", config={**PAYER, "callbacks": [handler], "run_id": ids[i]})

    async def flood() -> None:
        await asyncio.gather(*(one(i) for i in range(CALLS)))

    asyncio.run(flood())
    before = model.calls
    for i, run_id in enumerate(ids[:30]):  # the oldest: those past the cap left to the cache
        assert model.invoke(f"another question {i}", config={"run_id": run_id}).content
    assert model.calls == before + 30
