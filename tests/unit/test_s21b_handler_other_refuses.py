"""A budget handler of one ledger refuses a call after another ledger's handler reserved it (a
per-tenant and a global ledger): the call is never sent, and the other ledger holds nothing for
it (review s21 handler, finding 8). Real LangChain runs on a fake chat model."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from langchain_tokenbudget import AsyncBudgetCallbackHandler, BudgetCallbackHandler
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.errors import BudgetExceededError
from tokenbudget_core.ledger import Ledger


class Model(BaseChatModel):
    model_name: str = "gpt-4o"
    sent: int = 0

    @property
    def _llm_type(self) -> str:
        return "fake"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self.sent += 1
        usage = {"input_tokens": 100, "output_tokens": 20, "total_tokens": 120}
        message = AIMessage("ok", usage_metadata=usage)  # type: ignore[arg-type]
        return ChatResult(generations=[ChatGeneration(message=message)])


def _held(ledger: Ledger) -> Decimal:
    return sum(ledger.state().used.values(), Decimal(0))


@pytest.mark.parametrize("how", ["invoke", "stream", "ainvoke", "generate"])
@pytest.mark.parametrize("handler_type", [BudgetCallbackHandler, AsyncBudgetCallbackHandler])
def test_a_call_the_global_ledger_refuses_leaves_nothing_held_in_the_tenant_ledger(
    handler_type: type[BudgetCallbackHandler], how: str
) -> None:
    tenant_ledger = Ledger("memory://", policy=BudgetPolicy(daily_usd="10"))
    # refuses any call; for generate(), one prompt's worst case (~$0.00102) but not two: the
    # second prompt is refused after both ledgers reserved the first
    limit = "0.0015" if how == "generate" else "0.0001"
    global_ledger = Ledger("memory://", policy=BudgetPolicy(daily_usd=limit))
    tenant = handler_type(tenant_ledger, max_output_tokens=100)
    glob = handler_type(global_ledger, max_output_tokens=100)
    config: Any = {"callbacks": [tenant, glob]}
    model = Model()
    calls: dict[str, Any] = {
        "invoke": lambda: model.invoke("hi", config=config),
        "stream": lambda: list(model.stream("hi", config=config)),
        "ainvoke": lambda: asyncio.run(model.ainvoke("hi", config=config)),
        # the tenant ledger held every prompt the refused call started
        "generate": lambda: model.generate([[HumanMessage(t)] for t in "abc"], callbacks=[tenant, glob]),
    }
    with pytest.raises(BudgetExceededError):
        calls[how]()
    assert model.sent == 0
    assert _held(tenant_ledger) == 0
    assert _held(global_ledger) == 0
    assert not tenant._runs
