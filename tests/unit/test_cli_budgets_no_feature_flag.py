"""``tokenbudget budgets --no-feature`` shows only the budgets of calls that name no feature
(``[default_feature]``): ``--feature`` could name any feature but not "none", so an operator
chasing refusals of feature-less calls got every feature's tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_support import run
from tokenbudget_core.budgets import load_policy
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")

POLICY = """
daily_usd = "10"

[features.support]
feature_daily_usd = "5"

[default_feature]
feature_daily_usd = "0.02"
"""


@pytest.fixture
def setup(tmp_path: Path) -> tuple[str, str]:
    policy = tmp_path / "budgets.toml"
    policy.write_text(POLICY, encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(url, policy=load_policy(str(policy)), alerts=[])
    ledger.record(Usage(input_tokens=2_000, output_tokens=500), model="gpt-4o", user="u1")  # $0.01
    ledger.record(Usage(input_tokens=2_000, output_tokens=500), model="gpt-4o", feature="support")
    ledger.close()
    return url, str(policy)


def test_no_feature_shows_the_feature_less_budgets_only(setup: tuple[str, str]) -> None:
    url, policy = setup
    result = run("budgets", "--store", url, "--policy", policy, "--no-feature", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["steps"] == [{"feature": None, "step": "normal"}]
    per_feature = [r for r in data["budgets"] if r["budget"] == "feature_daily_usd"]
    assert [(r["feature"], r["limit"], r["used"]) for r in per_feature] == [(None, "0.02", "0.01")]

    table = run("budgets", "--store", url, "--policy", policy, "--no-feature")
    assert table.exit_code == 0, table.output
    assert "(no feature): budgets on" in table.stdout
    assert "support: budgets on" not in table.stdout


def test_no_feature_with_feature_is_refused_naming_both(setup: tuple[str, str]) -> None:
    url, policy = setup
    result = run("budgets", "--store", url, "--policy", policy, "--no-feature", "--feature", "support")
    assert result.exit_code != 0
    assert "--no-feature" in result.output
    assert "--feature" in result.output.replace("--no-feature", "")
