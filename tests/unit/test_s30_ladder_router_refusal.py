"""The router's own refusal carries the figures the ledger's refusals carry: ``limit``, ``used`` and
``requested`` are numbers (USD as ``Decimal``, tokens as ``int``), ``requested`` being the call on
the cheapest tier's model (before: ``used='195%'``, ``requested='a routed call'``)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tokenbudget_core import TierRouter, Usage
from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget
from tokenbudget_core.errors import BudgetExceededError
from tokenbudget_core.ledger import Ledger

TIERS = {"small": "gpt-4o-mini", "medium": "gpt-4.1-mini", "large": "gpt-4o"}
HARD = "Design a sharded rate limiter for our API and analyze how it fails under a network partition."


def ledger_with(tmp_path: Path, **limits: object) -> Ledger:
    policy = BudgetPolicy(default_feature=FeatureBudget(**limits))  # type: ignore[arg-type]
    return Ledger("memory://", policy=policy, spool_path=tmp_path / "spool.jsonl")


@pytest.fixture
def usd_ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = ledger_with(tmp_path, user_daily_usd=Decimal("1.00"))
    yield ledger
    ledger.close()


def spend_usd(ledger: Ledger, usd: str, user: str = "u1") -> None:
    """Charge ``usd`` of gpt-4o input ($2.50 per million tokens) to ``user``."""
    tokens = int(Decimal(usd) / Decimal("2.5") * 1_000_000)
    ledger.record(Usage(input_tokens=tokens, output_tokens=0), model="gpt-4o", user=user)


@pytest.mark.parametrize("mode", ["route", "aroute"])
def test_a_hard_refusal_names_the_money_figures(usd_ledger: Ledger, mode: str) -> None:
    router = TierRouter(TIERS, ledger=usd_ledger)
    cheapest = router.route(HARD, user="u1", force_tier="small")  # before the spend: what it costs
    spend_usd(usd_ledger, "1.95")  # past the limit by after-the-fact charges

    def ask() -> object:
        return (
            router.route(HARD, user="u1") if mode == "route" else asyncio.run(router.aroute(HARD, user="u1"))
        )

    with pytest.raises(BudgetExceededError) as err:
        ask()
    e = err.value
    assert (e.budget, e.step) == ("user_daily_usd", "hard_refusal")
    assert e.limit == Decimal("1.00")
    assert isinstance(e.limit, Decimal)
    assert isinstance(e.used, Decimal)
    assert e.used == usd_ledger.state(user="u1").used["user_daily_usd"]
    assert e.used > e.limit
    assert isinstance(e.requested, Decimal)
    assert e.requested == cheapest.estimated_cost_usd
    assert e.requested > 0
    assert "%" not in str(e)
    assert "a routed call" not in str(e)


def test_a_soft_refusal_the_router_makes_names_the_figures_too(usd_ledger: Ledger) -> None:
    spend_usd(usd_ledger, "0.98")
    router = TierRouter(TIERS, ledger=usd_ledger, refuse_at_soft_refusal=True)
    with pytest.raises(BudgetExceededError) as err:
        router.route(HARD, user="u1", max_output_tokens=100)
    e = err.value
    assert e.step == "soft_refusal"
    assert e.limit == Decimal("1.00")
    assert e.used == usd_ledger.state(user="u1").used["user_daily_usd"]
    small = TierRouter(TIERS).route(HARD, force_tier="small", max_output_tokens=100)
    assert e.requested == small.estimated_cost_usd  # the call's own output cap, on the cheapest tier


def test_a_token_budget_refusal_is_in_tokens(tmp_path: Path) -> None:
    ledger = ledger_with(tmp_path, user_daily_tokens=10_000)
    try:
        ledger.record(Usage(input_tokens=12_000, output_tokens=0), model="gpt-4o", user="u1")
        router = TierRouter(TIERS, ledger=ledger)
        with pytest.raises(BudgetExceededError) as err:
            router.route(HARD, user="u1")
        e = err.value
        assert (e.budget, e.limit, e.used) == ("user_daily_tokens", 10_000, 12_000)
        small = TierRouter(TIERS).route(HARD, force_tier="small")
        assert type(e.requested) is int
        assert e.requested == small.input_tokens + small.max_output_tokens
    finally:
        ledger.close()
