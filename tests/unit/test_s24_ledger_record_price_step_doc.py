"""``Ledger.record``'s docstring names the step that prices an unknown model's later calls
(``register_price``), and that step does what it says, while registering the model alone only
makes it known (its calls recorded unpriced, never as $0)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tokenbudget_core import Ledger, PriceOverride, PriceTable, Usage, register_price

pytestmark = pytest.mark.usefixtures("isolated")


def test_the_documented_price_step_prices_and_registering_alone_does_not() -> None:
    doc = Ledger.record.__doc__ or ""
    assert "register_price(" in doc
    assert "TOKENBUDGET_PRICES" in doc
    assert "only makes it known" in doc
    ledger = Ledger("memory://")
    usage = Usage(input_tokens=1_000_000)
    assert ledger.record(usage, model="acme-llm-7b", unknown_model="unpriced").cost_usd is None
    ledger.registry.register("acme-llm-7b", provider="openai")
    assert ledger.record(usage, model="acme-llm-7b").cost_usd is None  # known, still unpriced
    register_price("acme-llm-7b", PriceOverride(input_mtok="1.5", output_mtok="2"))
    assert ledger.record(usage, model="acme-llm-7b").cost_usd == Decimal("1.5")


def test_a_ledger_with_its_own_prices_is_priced_through_table() -> None:
    ledger = Ledger("memory://", prices=PriceTable())
    ledger.registry.register("acme-llm-7b", provider="openai")
    assert ledger.prices is not None
    register_price("acme-llm-7b", PriceOverride(input_mtok="3", output_mtok="3"), table=ledger.prices)
    assert ledger.record(Usage(input_tokens=1_000_000), model="acme-llm-7b").cost_usd == Decimal(3)
