"""Alert thresholds are one value however they are written: ``1`` and ``1.0`` are one threshold,
whose alert fires once a day (also across a reloaded policy)."""

from __future__ import annotations

from pathlib import Path

from tokenbudget_core import Ledger
from tokenbudget_core.alerts import Alert
from tokenbudget_core.budgets import BudgetPolicy, load_policy
from tokenbudget_core.price_overrides import PriceOverride, PriceTable
from tokenbudget_core.usage import Usage

PRICES = PriceTable({"gpt-4o": PriceOverride(input_mtok="1", output_mtok="1")})


def _ledger(tmp_path: Path, policy: BudgetPolicy, got: list[Alert]) -> Ledger:
    return Ledger(
        "memory://", policy=policy, prices=PRICES, alerts=[got.append], spool_path=tmp_path / "spool"
    )


def test_thresholds_are_floats_sorted_and_each_once() -> None:
    policy = BudgetPolicy(alert_thresholds=(1, 0.8, 1.0, 0.8))
    assert policy.alert_thresholds == (0.8, 1.0)
    assert all(type(t) is float for t in policy.alert_thresholds)
    assert load_policy({"alerts": {"thresholds": [1, 0.5]}}).alert_thresholds == (0.5, 1.0)


def test_one_and_one_point_zero_in_one_policy_fire_one_alert(tmp_path: Path) -> None:
    got: list[Alert] = []
    ledger = _ledger(tmp_path, BudgetPolicy(user_daily_tokens=100, alert_thresholds=(0.8, 1, 1.0)), got)
    ledger.record(model="gpt-4o", usage=Usage(input_tokens=100, output_tokens=0), user="u")
    assert sorted(a.threshold for a in got) == [0.8, 1.0]


def test_a_reloaded_policy_writing_1_does_not_fire_the_100_percent_alert_again(tmp_path: Path) -> None:
    got: list[Alert] = []
    policy = load_policy({"user_daily_tokens": 100, "alerts": {"thresholds": [0.8, 1.0]}})
    ledger = _ledger(tmp_path, policy, got)
    ledger.record(model="gpt-4o", usage=Usage(input_tokens=100, output_tokens=0), user="u")
    assert sorted(a.threshold for a in got) == [0.8, 1.0]
    ledger.policy = load_policy({"user_daily_tokens": 100, "alerts": {"thresholds": [0.8, 1]}})
    ledger.record(model="gpt-4o", usage=Usage(input_tokens=1, output_tokens=0), user="u")
    assert sorted(a.threshold for a in got) == [0.8, 1.0]  # the same day: no second 100% alert
