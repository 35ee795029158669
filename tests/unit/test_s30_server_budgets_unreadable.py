"""Review s30 (server #2): with the store unreachable, a service failing open
(``--on-unavailable open``) answered ``GET /budgets`` 200 with ``budgets: []`` and every step
``normal``, which reads as "no budget configured, nothing used"; /usage/report and /health said
503. ``budget_rows`` (what ``/budgets`` and ``tokenbudget budgets`` show) now raises
BudgetUnavailableError for a store it cannot read, whichever way the ledger fails."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tokenbudget_core.budget_status import budget_rows, features_of
from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget
from tokenbudget_core.errors import BudgetUnavailableError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.server import create_app

pytestmark = pytest.mark.usefixtures("isolated")

DOWN = "redis://127.0.0.1:1/0?socket_connect_timeout=1&socket_timeout=1"  # nothing listens on port 1
POLICY = BudgetPolicy(daily_usd="10", features={"chat": FeatureBudget(feature_daily_usd="2")})


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_budgets_answer_503_while_the_store_is_down(mode: str, tmp_path: Path) -> None:
    ledger = Ledger(DOWN, policy=POLICY, on_unavailable=mode, spool_path=tmp_path / "spool", alerts=[])  # type: ignore[arg-type]
    with TestClient(create_app(ledger)) as c:
        for params in ({}, {"feature": "chat", "user": "alice"}, {"no_user": "true"}):
            answer = c.get("/budgets", params=params)
            assert answer.status_code == 503, answer.text
            body = answer.json()
            assert body["error"] == "budget_unavailable"
            assert body["store"].startswith("redis://127.0.0.1:1/0")
            assert "unreachable" in body["message"]


def test_budget_rows_raise_for_a_fail_open_ledger(tmp_path: Path) -> None:
    ledger = Ledger(DOWN, policy=POLICY, on_unavailable="open", spool_path=tmp_path / "spool", alerts=[])
    with pytest.raises(BudgetUnavailableError) as e:
        budget_rows(ledger, features_of(ledger.policy), None)
    assert e.value.store.startswith("redis://127.0.0.1:1/0")
    assert e.value.detail  # the store's own reason, not an empty one


def test_a_fail_open_ledger_still_lets_calls_through(tmp_path: Path) -> None:
    # only the figures are unreadable: the ledger's own fail-open behaviour is unchanged
    ledger = Ledger(DOWN, policy=POLICY, on_unavailable="open", spool_path=tmp_path / "spool", alerts=[])
    assert ledger.state(feature="chat").unchecked
    assert ledger.reserve(model="gpt-4o", input_tokens=10, max_output_tokens=10, feature="chat").unchecked
