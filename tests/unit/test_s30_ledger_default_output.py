"""A reserve that names no ``max_output_tokens`` takes as its worst case the smaller of the
feature's ``max_output_tokens_per_call`` and the model's own output limit: a feature's one cap
serving models of several sizes must not inflate a smaller model's worst case (refusing calls
that fit), and a cap of 0 (a feature with no output) is a cap, not "no cap"."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.registry import default_registry

pytestmark = pytest.mark.usefixtures("isolated")

GPT4O_MAX = default_registry().get("gpt-4o").max_output_tokens


def _urls(tmp_path: Path) -> list[str]:
    return ["memory://", f"sqlite:///{tmp_path / 'ledger.db'}"]


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_feature_cap_above_the_models_limit_reserves_the_models_limit(tmp_path: Path, store: str) -> None:
    assert GPT4O_MAX is not None
    assert GPT4O_MAX < 64_000
    url = "memory://" if store == "memory" else f"sqlite:///{tmp_path / 'ledger.db'}"
    policy = BudgetPolicy(
        features={"support": FeatureBudget(max_output_tokens_per_call=64_000, user_daily_usd="0.25")}
    )
    ledger = Ledger(url, policy=policy)
    named = ledger.check(
        model="gpt-4o", input_tokens=1_000, max_output_tokens=GPT4O_MAX, feature="support", user="u1"
    )
    checked = ledger.check(model="gpt-4o", input_tokens=1_000, feature="support", user="u1")
    assert checked.max_output_tokens == GPT4O_MAX
    assert checked.worst_case_usd == named.worst_case_usd
    for _ in range(2):  # the general path, then the lane a first call built
        r = ledger.reserve(model="gpt-4o", input_tokens=1_000, feature="support", user="u1")
        assert r.max_output_tokens == GPT4O_MAX
        assert r.reserved_usd == named.worst_case_usd
        ledger.release(r)


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_cap_of_zero_is_the_default_output(tmp_path: Path, store: str) -> None:
    url = "memory://" if store == "memory" else f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(url, policy=BudgetPolicy(features={"embed": FeatureBudget(max_output_tokens_per_call=0)}))
    for _ in range(2):
        r = ledger.reserve(model="gpt-4o", input_tokens=100, feature="embed")
        assert r.max_output_tokens == 0
        assert r.reserved_usd == Decimal("0.00025")  # 100 input tokens at $2.50 per million
        ledger.release(r)


def test_a_cap_below_the_models_limit_stays_the_default(tmp_path: Path) -> None:
    ledger = Ledger(
        "memory://", policy=BudgetPolicy(features={"chat": FeatureBudget(max_output_tokens_per_call=500)})
    )
    r = ledger.reserve(model="gpt-4o", input_tokens=100, feature="chat")
    assert r.max_output_tokens == 500
