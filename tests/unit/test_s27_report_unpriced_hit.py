"""A day whose model calls were all unpriced has no cost per active user or per conversation
(``None``: unknown, never $0), also when the day has a cache hit: a hit is no model call, so it
makes no cost known. A priced call (even one costing $0) still does."""

from __future__ import annotations

from decimal import Decimal

from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report
from tokenbudget_core.usage import Usage


def _unpriced_call(ledger: Ledger) -> None:
    ledger.record(
        Usage(input_tokens=50_000, output_tokens=5_000),
        model="my-finetune",
        feature="chat",
        user="alice",
        conversation="c1",
        unknown_model="unpriced",
    )


def test_unpriced_day_with_a_cache_hit_has_no_cost_per_user_or_conversation() -> None:
    ledger = Ledger("memory://")
    _unpriced_call(ledger)
    ledger.record(
        Usage(requests=1),
        model="gpt-4o",
        feature="chat",
        user="bob",
        cache_hit=True,
        saved_usd=Decimal("0.01"),
    )
    day = build_report(ledger, last_days=1).per_day[0]
    assert day.requests == 2
    assert day.unpriced_requests == 1
    assert day.active_users == 2
    assert day.cost_per_active_user_usd is None
    assert day.cost_per_conversation_usd is None


def test_unpriced_day_with_an_unpriced_cache_hit_has_no_cost_per_user() -> None:
    ledger = Ledger("memory://")
    _unpriced_call(ledger)
    ledger.record(
        Usage(requests=1),
        model="my-finetune",
        feature="chat",
        user="bob",
        cache_hit=True,
        unknown_model="unpriced",
    )
    day = build_report(ledger, last_days=1).per_day[0]
    assert day.cost_per_active_user_usd is None
    assert day.cost_per_conversation_usd is None


def test_a_priced_call_beside_the_hit_keeps_the_ratios() -> None:
    ledger = Ledger("memory://")
    _unpriced_call(ledger)
    ledger.record(Usage(requests=1), model="gpt-4o", feature="chat", user="bob", cache_hit=True)
    ledger.record(
        Usage(input_tokens=1_000, output_tokens=100),
        model="gpt-4o",
        feature="chat",
        user="carol",
        conversation="c2",
    )
    day = build_report(ledger, last_days=1).per_day[0]
    assert day.cost_usd > 0
    assert day.cost_per_active_user_usd == (day.cost_usd / 3).quantize(Decimal("1e-9"))
    assert day.cost_per_conversation_usd == (day.cost_usd / 2).quantize(Decimal("1e-9"))


def test_a_day_of_cache_hits_only_costs_zero_per_user() -> None:
    ledger = Ledger("memory://")
    ledger.record(Usage(requests=1), model="gpt-4o", feature="chat", user="bob", cache_hit=True)
    day = build_report(ledger, last_days=1).per_day[0]
    assert day.cost_per_active_user_usd == 0
