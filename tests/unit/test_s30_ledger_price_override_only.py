"""A model the registry does not know but a price override names (``register_price``) is
priceable (pricing.py: "An override makes its exact name priceable even when the registry does
not know it"; ``Ledger.record``'s docstring tells an unknown model's caller to give it a price):
the ledger reserves, checks, commits and records it at that price, and its spend counts
against dollar budgets. A name neither knows stays an explicit ``UnknownModelError``."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from tokenbudget_core import Usage
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.errors import BudgetExceededError, InvalidInputError, UnknownModelError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.price_overrides import PriceOverride, PriceTable, register_price
from tokenbudget_core.reports import build_report

pytestmark = pytest.mark.usefixtures("isolated")

MODEL = "acme-chat-7b"
USAGE = Usage(input_tokens=1_000_000, output_tokens=1_000_000)


def _ledger(tmp_path: Path, store: str, daily_usd: str = "100") -> Ledger:
    prices = PriceTable()
    register_price(MODEL, PriceOverride(input_mtok="1", output_mtok="2"), table=prices)
    url = "memory://" if store == "memory" else f"sqlite:///{tmp_path / 'ledger.db'}"
    return Ledger(url, prices=prices, policy=BudgetPolicy(daily_usd=daily_usd))


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_record_and_commit_price_an_override_only_model(tmp_path: Path, store: str) -> None:
    ledger = _ledger(tmp_path, store)
    assert ledger.record(USAGE, model=MODEL).cost_usd == Decimal(3)
    assert ledger.record(USAGE, model=MODEL, unknown_model="unpriced").cost_usd == Decimal(3)
    r = ledger.reserve(model=MODEL, input_tokens=1_000, max_output_tokens=100)
    assert r.reserved_usd == Decimal("0.0012")
    assert ledger.commit(r, Usage(input_tokens=1_000, output_tokens=50)).cost_usd == Decimal("0.0011")
    assert build_report(ledger).totals.cost_usd == Decimal("6.0011")


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_its_spend_counts_against_dollar_budgets(tmp_path: Path, store: str) -> None:
    ledger = _ledger(tmp_path, store, daily_usd="4")
    ledger.record(USAGE, model=MODEL)  # $3 of $4
    with pytest.raises(BudgetExceededError):
        ledger.reserve(model=MODEL, input_tokens=1_000_000, max_output_tokens=1_000)
    with pytest.raises(BudgetExceededError):
        ledger.check(model=MODEL, input_tokens=1_000_000, max_output_tokens=1_000)


def test_a_reserve_without_max_output_names_what_to_pass(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path, "memory")
    with pytest.raises(InvalidInputError) as e:
        ledger.reserve(model=MODEL, input_tokens=10)
    assert e.value.field == "max_output_tokens"


def test_a_name_neither_knows_stays_unknown(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path, "memory")
    with pytest.raises(UnknownModelError):
        ledger.record(USAGE, model="acme-chat-8b")
    with pytest.raises(UnknownModelError):
        ledger.reserve(model="acme-chat-8b", input_tokens=10, max_output_tokens=10)
    assert ledger.record(USAGE, model="acme-chat-8b", unknown_model="unpriced").cost_usd is None
