"""A daily limit raised during the day (``ledger.policy = ...``, the usual answer to an 80% alert)
gets its own 80%/100% and refusing alerts when its thresholds are crossed, under ids of its own;
an unchanged limit still alerts once per budget and day, across ledgers sharing a store
(review s22 #7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenbudget_core.alerts import Alert
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.errors import BudgetExceededError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.usage import Usage


def _spend(ledger: Ledger, usd: float) -> None:  # gpt-4o input: $2.50 per million tokens
    ledger.record(Usage(input_tokens=round(usd / 2.5 * 1_000_000), output_tokens=0), model="gpt-4o", user="u")


def _crossed(got: list[Alert]) -> list[tuple[float, str, bool]]:
    seen = [(a.threshold, a.limit, a.refusing) for a in got]
    got.clear()
    return seen


def test_a_raised_limit_alerts_at_its_own_80_and_100_percent() -> None:
    got: list[Alert] = []
    ledger = Ledger("memory://", policy=BudgetPolicy(daily_usd="1"), alerts=[got.append])
    _spend(ledger, 0.85)
    assert _crossed(got) == [(0.8, "1", False)]
    old_ids = {a.id for a in got}
    ledger.policy = BudgetPolicy(daily_usd="10")
    _spend(ledger, 7.65)  # $8.50 of $10
    eighty = list(got)
    assert _crossed(got) == [(0.8, "10", False)]
    assert not old_ids & {a.id for a in eighty}  # a webhook de-duplicating by id takes it
    _spend(ledger, 1.60)  # $10.10 of $10
    assert _crossed(got) == [(1.0, "10", False)]
    _spend(ledger, 1.0)  # the same limit: told once a day
    assert _crossed(got) == []


def test_a_limit_raised_after_its_100_percent_alert_alerts_again_past_the_new_limit() -> None:
    got: list[Alert] = []
    ledger = Ledger("memory://", policy=BudgetPolicy(daily_usd="1"), alerts=[got.append])
    _spend(ledger, 1.05)
    assert _crossed(got) == [(0.8, "1", False), (1.0, "1", False)]
    ledger.policy = BudgetPolicy(daily_usd="10")
    _spend(ledger, 9.5)  # $10.55 of $10
    assert _crossed(got) == [(0.8, "10", False), (1.0, "10", False)]


def test_a_raised_limit_that_refuses_calls_says_so_once() -> None:
    got: list[Alert] = []
    ledger = Ledger("memory://", policy=BudgetPolicy(daily_usd="1"), alerts=[got.append])

    def reserve() -> None:  # $0.025 worst case
        ledger.reserve(model="gpt-4o", input_tokens=10_000, max_output_tokens=0, user="u")

    _spend(ledger, 0.99)
    with pytest.raises(BudgetExceededError):
        reserve()
    assert [(t, limit, refusing) for t, limit, refusing in _crossed(got) if refusing] == [(0.99, "1", True)]
    ledger.policy = BudgetPolicy(daily_usd="10")
    _spend(ledger, 8.9)  # $9.89 of $10
    for _ in range(2):
        with pytest.raises(BudgetExceededError):
            reserve()
    assert _crossed(got) == [(0.8, "10", False), (0.989, "10", True)]


def test_ledgers_sharing_a_store_tell_each_limit_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    got: list[Alert] = []
    a = Ledger(url, policy=BudgetPolicy(daily_usd="1"), alerts=[got.append])
    b = Ledger(url, policy=BudgetPolicy(daily_usd="1"), alerts=[got.append])
    _spend(a, 0.85)
    _spend(b, 0.01)
    assert _crossed(got) == [(0.8, "1", False)]
    a.policy = b.policy = BudgetPolicy(daily_usd="2")
    _spend(b, 0.90)  # $1.76 of $2
    _spend(a, 0.01)
    assert _crossed(got) == [(0.8, "2", False)]
