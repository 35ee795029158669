"""The budgets of calls that name no feature (``[default_feature]``) are shown alongside the
configured features' by ``tokenbudget budgets``, ``GET /budgets``, ``/metrics`` and the dashboard:
a budget refusing every feature-less call is not hidden behind the configured features."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cli_support import run
from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget, load_policy
from tokenbudget_core.errors import BudgetExceededError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.server import create_app
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")

POLICY = """
daily_usd = "10"

[features.support]
feature_daily_usd = "5"

[default_feature]
feature_daily_usd = "0.01"
"""


@pytest.fixture
def policy_path(tmp_path: Path) -> str:
    path = tmp_path / "budgets.toml"
    path.write_text(POLICY, encoding="utf-8")
    return str(path)


@pytest.fixture
def store(tmp_path: Path, policy_path: str) -> str:
    """A ledger whose feature-less calls spent their whole $0.01: every further one is refused."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(url, policy=load_policy(policy_path), alerts=[])
    ledger.record(Usage(input_tokens=2_000, output_tokens=500), model="gpt-4o", user="u1")  # $0.01
    with pytest.raises(BudgetExceededError) as refused:
        ledger.reserve(model="gpt-4o", input_tokens=10, max_output_tokens=10, user="u2")
    assert refused.value.budget == "feature_daily_usd"
    ledger.close()
    return url


def _no_feature_row(rows: list[dict[str, object]]) -> dict[str, object]:
    (row,) = [r for r in rows if r["feature"] is None and r["budget"] == "feature_daily_usd"]
    return row


def test_cli_budgets_lists_the_no_feature_budget(store: str, policy_path: str) -> None:
    result = run("budgets", "--store", store, "--policy", policy_path, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    row = _no_feature_row(data["budgets"])
    assert (row["limit"], row["used"], row["headroom"], row["step"]) == ("0.01", "0.01", "0", "hard_refusal")
    assert {"feature": None, "step": "hard_refusal"} in data["steps"]
    assert {"feature": "support", "step": "normal"} in data["steps"]

    table = run("budgets", "--store", store, "--policy", policy_path)
    assert table.exit_code == 0, table.output
    assert "(no feature): budgets on" in table.stdout
    assert "ladder step for (no feature): hard_refusal" in table.stdout


def test_cli_feature_filter_still_shows_that_feature_only(store: str, policy_path: str) -> None:
    result = run("budgets", "--store", store, "--policy", policy_path, "--feature", "support", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["steps"] == [{"feature": "support", "step": "normal"}]
    assert [r["feature"] for r in data["budgets"] if r["budget"] == "feature_daily_usd"] == ["support"]


@pytest.fixture
def client(store: str, policy_path: str) -> Iterator[TestClient]:
    with TestClient(create_app(store, policy=load_policy(policy_path), alerts=[])) as c:
        yield c


def test_get_budgets_lists_the_no_feature_budget(client: TestClient) -> None:
    data = client.get("/budgets").json()
    row = _no_feature_row(data["budgets"])
    assert row["step"] == "hard_refusal"
    assert {"feature": None, "step": "hard_refusal"} in data["steps"]
    assert client.get("/budgets", params={"feature": "support"}).json()["steps"] == [
        {"feature": "support", "step": "normal"}
    ]


def test_dashboard_data_lists_the_no_feature_budget(client: TestClient) -> None:
    data = client.get("/dashboard/data").json()
    assert _no_feature_row(data["budgets"])["step"] == "hard_refusal"
    assert {"feature": None, "step": "hard_refusal"} in data["steps"]


def test_metrics_export_the_no_feature_budget(client: TestClient) -> None:
    text = client.get("/metrics").text
    used = [
        line
        for line in text.splitlines()
        if line.startswith("tokenbudget_budget_used_share{") and 'budget="feature_daily_usd"' in line
    ]
    assert len(used) == 2, used  # support's and the feature-less calls'
    assert any(line.endswith((" 1", " 1.0")) for line in used), used


def test_features_of() -> None:
    from tokenbudget_core.budget_status import features_of

    assert features_of(BudgetPolicy()) == [None]
    configured = {"b": FeatureBudget(), "a": FeatureBudget(feature_daily_usd=Decimal(1))}
    assert features_of(BudgetPolicy(features=configured)) == ["a", "b"]
    per_call = FeatureBudget(max_output_tokens_per_call=10)
    assert features_of(BudgetPolicy(features=configured, default_feature=per_call)) == ["a", "b", None]
