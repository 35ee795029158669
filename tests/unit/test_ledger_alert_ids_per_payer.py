"""Through the ledger: two payers whose scope text reads alike get different alert ids, and a
shared budget's alert does not name the payer who happened to cross it."""

from __future__ import annotations

from pathlib import Path

from tokenbudget_core import Ledger
from tokenbudget_core.alerts import Alert
from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget
from tokenbudget_core.price_overrides import PriceOverride, PriceTable
from tokenbudget_core.usage import Usage

PRICES = PriceTable({"gpt-4o": PriceOverride(input_mtok="1", output_mtok="1")})


def test_payers_whose_scope_text_reads_alike_get_different_alert_ids(tmp_path: Path) -> None:
    got: list[Alert] = []
    policy = BudgetPolicy(default_feature=FeatureBudget(user_daily_tokens=100))
    ledger = Ledger("memory://", alerts=[got.append], policy=policy, prices=PRICES, spool_path=tmp_path / "s")
    payers = [("chat user=alice", "bob"), ("chat", "alice user=bob"), (None, "carol"), ("-", "carol")]
    for feature, user in payers:
        ledger.record(
            model="gpt-4o", usage=Usage(input_tokens=85, output_tokens=0), feature=feature, user=user
        )
    assert len(got) == 4
    assert len({a.id for a in got}) == 4
    assert [(a.feature, a.user) for a in got] == payers


def test_a_shared_budgets_alert_names_no_payer(tmp_path: Path) -> None:
    got: list[Alert] = []
    policy = BudgetPolicy(daily_usd="0.0001", features={"chat": FeatureBudget(feature_daily_usd="0.0001")})
    ledger = Ledger("memory://", alerts=[got.append], policy=policy, prices=PRICES, spool_path=tmp_path / "s")
    ledger.record(model="gpt-4o", usage=Usage(input_tokens=85, output_tokens=0), feature="chat", user="u")
    by_budget = {a.budget: (a.feature, a.user) for a in got}
    assert by_budget == {"daily_usd": (None, None), "feature_daily_usd": ("chat", None)}
