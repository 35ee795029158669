"""``$TOKENBUDGET_SPOOL`` set but empty is refused only where it would be used: a ledger on a
store that can spool and with no ``spool_path`` of its own. Before, ``check()`` on a
``memory://`` ledger raised about the variable while ``reserve()`` worked (its checker, a ledger
on a wrapped store, read the variable), so ``tokenbudget serve``'s ``/budget/check`` answered
422 naming a server variable the client cannot fix; and an explicit ``spool_path=`` was refused
too, though it wins over the variable (review s24 B3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger

CALL = {"model": "gpt-4o-mini", "input_tokens": 10, "max_output_tokens": 10}


@pytest.fixture(autouse=True)
def empty_spool_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENBUDGET_SPOOL", "")


def test_a_memory_ledgers_check_answers_as_its_reserve() -> None:
    ledger = Ledger("memory://", policy=BudgetPolicy(daily_usd="1"))
    assert ledger.check(**CALL).step == "normal"
    ledger.release(ledger.reserve(**CALL))


def test_an_explicit_spool_path_wins_over_the_empty_variable(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}", spool_path=tmp_path / "spool.jsonl")
    assert ledger.check(**CALL).step == "normal"


def test_a_ledger_that_would_read_the_variable_still_refuses_it(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as info:
        Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    assert info.value.field == "$TOKENBUDGET_SPOOL"
