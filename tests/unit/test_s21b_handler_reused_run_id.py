"""A ``config["run_id"]`` reused call after call is reserved in one store round trip, not one per
earlier reuse (review s21 handler, finding 6), and each call is still charged once."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from langchain_tokenbudget import AsyncBudgetCallbackHandler, BudgetCallbackHandler
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report
from tokenbudget_core.stores.base import ReserveOutcome, ReserveRequest
from tokenbudget_core.stores.memory import MemoryStore

CALLS = 12


class CountingStore(MemoryStore):
    """The memory store, counting the reservations asked of it (each a round trip on Redis)."""

    def __init__(self) -> None:
        super().__init__()
        self.reserves = 0

    def reserve(self, req: ReserveRequest) -> ReserveOutcome:
        self.reserves += 1
        return super().reserve(req)


@pytest.mark.parametrize("handler_type", [BudgetCallbackHandler, AsyncBudgetCallbackHandler])
def test_each_reuse_of_a_run_id_reserves_in_one_round_trip(handler_type: type[BudgetCallbackHandler]) -> None:
    store = CountingStore()
    ledger = Ledger(store)
    handler = handler_type(ledger, model="gpt-4o")
    usage: Any = {"input_tokens": 10, "output_tokens": 2, "total_tokens": 12}
    model = GenericFakeChatModel(messages=iter([AIMessage("ok", usage_metadata=usage) for _ in range(CALLS)]))
    rid = uuid.uuid4()
    trips = []
    for _ in range(CALLS):
        before = store.reserves
        model.invoke("hi", config={"callbacks": [handler], "run_id": rid})
        trips.append(store.reserves - before)
    assert trips[:2] == [1, 2]  # its own id, then (settled) #1
    assert trips[2:] == [1] * (CALLS - 2)  # then straight to the next free suffix
    assert build_report(ledger).totals.requests == CALLS


@pytest.mark.parametrize("handler_type", [BudgetCallbackHandler, AsyncBudgetCallbackHandler])
def test_two_handlers_of_one_ledger_charge_each_reuse_once(handler_type: type[BudgetCallbackHandler]) -> None:
    """The handlers reserve different worst cases: the second leaves each call to the first."""
    ledger = Ledger("memory://")
    on_model = handler_type(ledger, model="gpt-4o", max_output_tokens=100)
    in_config = handler_type(ledger, model="gpt-4o", max_output_tokens=200)
    usage: Any = {"input_tokens": 10, "output_tokens": 2, "total_tokens": 12}
    replies = iter([AIMessage("ok", usage_metadata=usage) for _ in range(CALLS)])
    model = GenericFakeChatModel(messages=replies, callbacks=[on_model])
    rid = uuid.uuid4()
    for _ in range(CALLS):
        model.invoke("hi", config={"callbacks": [in_config], "run_id": rid})
    assert build_report(ledger).totals.requests == CALLS
