"""Budgets of calls that name no user (review s27 B1 / C3): they count as one anonymous user in
every per-user budget. Before, ``budget_rows`` (``tokenbudget budgets``, ``GET /budgets``, the
dashboard) left those budgets out yet took the ladder step from them: every row shown said 0%
``normal`` and the step line said ``hard_refusal``, with no way to show the budget refusing."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from tokenbudget_core import Ledger
from tokenbudget_core.budget_status import budget_rows, features_of
from tokenbudget_core.budgets import BudgetPolicy, load_policy
from tokenbudget_core.cli import cli
from tokenbudget_core.errors import BudgetExceededError, InvalidInputError
from tokenbudget_core.server import create_app
from tokenbudget_core.usage import Usage


@pytest.fixture
def ledger() -> Ledger:
    ledger = Ledger("memory://", policy=BudgetPolicy(daily_usd="10", user_daily_usd="0.01"), alerts=[])
    ledger.record(Usage(input_tokens=10_000, output_tokens=0), model="gpt-4o", feature="chat")  # $0.025
    with pytest.raises(BudgetExceededError):  # the next call naming no user is refused
        ledger.reserve(model="gpt-4o", input_tokens=100, max_output_tokens=10, feature="chat")
    return ledger


def test_without_a_user_the_step_is_that_of_the_budgets_shown(ledger: Ledger) -> None:
    rows, steps = budget_rows(ledger, features_of(ledger.policy), None)
    assert [(r["budget"], r["step"]) for r in rows] == [("daily_usd", "normal")]
    assert [s["step"] for s in steps] == ["normal"]
    assert ledger.reserve(model="gpt-4o", input_tokens=100, max_output_tokens=10, feature="chat", user="bob")


def test_no_user_shows_the_anonymous_users_budget_that_refuses(ledger: Ledger) -> None:
    rows, steps = budget_rows(ledger, features_of(ledger.policy), None, no_user=True)
    anonymous = {r["budget"]: r for r in rows if r["budget"].startswith("user_")}
    row = anonymous["user_daily_usd (all features)"]
    assert row["user"] is None
    assert row["share"] == pytest.approx(2.5)
    assert row["step"] == "hard_refusal"
    assert [s["step"] for s in steps] == ["hard_refusal"]
    with pytest.raises(InvalidInputError, match="no_user: cannot be combined with user 'bob'"):
        budget_rows(ledger, [None], "bob", no_user=True)


def test_the_service_shows_them_with_no_user(ledger: Ledger) -> None:
    with TestClient(create_app(ledger)) as client:
        plain = client.get("/budgets").json()
        anonymous = client.get("/budgets", params={"no_user": "true"}).json()
    assert [b["budget"] for b in plain["budgets"]] == ["daily_usd"]
    assert plain["steps"][0]["step"] == "normal"
    assert "user_daily_usd (all features)" in [b["budget"] for b in anonymous["budgets"]]
    assert anonymous["steps"][0]["step"] == "hard_refusal"


def test_the_cli_budgets_command_shows_them_with_no_user(tmp_path: Path) -> None:
    db, policy = tmp_path / "b.db", tmp_path / "budgets.toml"
    policy.write_text('daily_usd = "10"\nuser_daily_usd = "0.01"\n')
    ledger = Ledger(f"sqlite:///{db}", policy=load_policy(policy), alerts=[])
    ledger.record(Usage(input_tokens=10_000, output_tokens=0), model="gpt-4o", feature="chat")
    ledger.store.close()
    args = ["budgets", "--store", f"sqlite:///{db}", "--policy", str(policy)]
    plain = CliRunner().invoke(cli, args)
    assert plain.exit_code == 0, plain.output
    assert "user_daily_usd" not in plain.output
    assert "ladder step for (no feature): normal" in plain.output
    anonymous = CliRunner().invoke(cli, [*args, "--no-user"])
    assert anonymous.exit_code == 0, anonymous.output
    assert "user_daily_usd" in anonymous.output
    assert "250%" in anonymous.output
    assert "ladder step for (no feature) (calls naming no user): hard_refusal" in anonymous.output
    both = CliRunner().invoke(cli, [*args, "--no-user", "--user", "bob"])
    assert both.exit_code != 0
    assert "--no-user: cannot be combined with --user 'bob'" in both.output
