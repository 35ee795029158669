"""``CostEventHandler(ledger)`` positionally works, as ``BudgetCallbackHandler(ledger)`` does.

Review s22-docs B3: the positional form gave pydantic's bare ``TypeError: takes 1 positional
argument but 2 were given``, with no word of ``ledger=``.
"""

from __future__ import annotations

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.llms import MockLLM

from llamaindex_tokenbudget import CostEventHandler
from tokenbudget_core import InvalidInputError, Ledger


def test_the_ledger_positionally_records_calls() -> None:
    ledger = Ledger("memory://")
    handler = CostEventHandler(ledger, model="gpt-4o-mini", feature="f", user="u")
    assert handler.ledger is ledger
    assert handler.model == "gpt-4o-mini"
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(handler)
    try:
        MockLLM(max_tokens=5).complete("Say hi")
    finally:
        dispatcher.event_handlers.remove(handler)
    [row] = ledger.store.rollup([ledger.day()])
    assert row.values["output_tokens"] == 5


def test_the_keyword_form_still_works() -> None:
    ledger = Ledger("memory://")
    assert CostEventHandler(ledger=ledger).ledger is ledger


def test_bad_positional_forms_are_named() -> None:
    ledger = Ledger("memory://")
    with pytest.raises(InvalidInputError) as info:
        CostEventHandler(ledger, ledger=ledger)
    assert info.value.field == "ledger"
    with pytest.raises(InvalidInputError) as info:
        CostEventHandler(ledger, "gpt-4o-mini")  # type: ignore[arg-type]
    assert info.value.fix
    assert "model=" in info.value.fix
    with pytest.raises(InvalidInputError) as info:
        CostEventHandler("memory://")  # type: ignore[arg-type]
    assert info.value.field == "ledger"
