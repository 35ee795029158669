"""Review s30 (reports #2): the service mounted in a host app whose middleware wraps each request
in ``attribute()`` (the README's way to charge a request) charged and read for the host's payer,
not the ``feature`` / ``user`` the request names (a block's ids win over a ledger call's
arguments). The service's calls now run under an empty attribution: the ids sent are the ids used."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tokenbudget_core.attribution import attribute
from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report
from tokenbudget_core.server import create_app

pytestmark = pytest.mark.usefixtures("isolated")

CALL = {"model": "gpt-4o", "input_tokens": 1000, "max_output_tokens": 100}


class HostAttribution:
    """The host app's own per-request payer (its logged-in admin), as ASGI middleware."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        with attribute(feature="admin-console", user="admin"):
            await self.app(scope, receive, send)


@pytest.fixture
def mounted() -> tuple[TestClient, Ledger]:
    policy = BudgetPolicy(
        features={"chat": FeatureBudget(user_daily_usd="1"), "search": FeatureBudget(user_daily_usd="1")}
    )
    ledger = Ledger("memory://", policy=policy, alerts=[])
    host = FastAPI()
    host.mount("/tb", create_app(ledger))
    return TestClient(HostAttribution(host)), ledger


def _payers(ledger: Ledger) -> list[tuple[str | None, str | None, str]]:
    report = build_report(ledger, last_days=1, by=("feature", "user"))
    return [
        (row.key, dim, str(row.cost_usd))
        for dim in ("feature", "user")
        for row in report.breakdown(dim).rows  # type: ignore[arg-type]
    ]


def test_record_is_charged_to_the_payer_it_names(mounted: tuple[TestClient, Ledger]) -> None:
    client, ledger = mounted
    body = {"model": "gpt-4o", "usage": {"input_tokens": 100_000, "output_tokens": 10_000}}
    answer = client.post("/tb/usage/record", json=body | {"feature": "chat", "user": "alice"})
    assert answer.status_code == 200
    assert _payers(ledger) == [("chat", "feature", "0.35"), ("alice", "user", "0.35")]


def test_reserve_and_commit_keep_the_payer_they_name(mounted: tuple[TestClient, Ledger]) -> None:
    client, ledger = mounted
    reservation = client.post("/tb/budget/reserve", json=CALL | {"feature": "search", "user": "carol"}).json()
    assert (reservation["feature"], reservation["user"]) == ("search", "carol")
    usage = {"input_tokens": 1000, "output_tokens": 100}
    assert client.post("/tb/budget/commit", json={"reservation": reservation, "usage": usage}).json()[
        "applied"
    ]
    assert [key for key, _, _ in _payers(ledger)] == ["search", "carol"]


def test_check_and_budgets_answer_for_the_payer_named(mounted: tuple[TestClient, Ledger]) -> None:
    client, _ledger = mounted
    body = {"model": "gpt-4o", "usage": {"input_tokens": 300_000, "output_tokens": 30_000}}
    client.post("/tb/usage/record", json=body | {"feature": "chat", "user": "alice"})  # $1.05: over $1
    refused = client.post("/tb/budget/check", json=CALL | {"feature": "chat", "user": "alice"}).json()
    allowed = client.post("/tb/budget/check", json=CALL | {"feature": "search", "user": "bob"}).json()
    assert refused["allowed"] is False
    assert refused["budget"] == "user_daily_usd"
    assert allowed["allowed"] is True
    rows = client.get("/tb/budgets", params={"feature": "search", "user": "bob"}).json()["budgets"]
    assert [(r["feature"], r["user"], r["budget"], r["used"]) for r in rows] == [
        ("search", "bob", "user_daily_usd", "0")
    ]
    rows = client.get("/tb/budgets", params={"feature": "chat", "user": "alice"}).json()["budgets"]
    assert [(r["user"], r["used"]) for r in rows] == [("alice", "1.05")]


def test_release_settles_the_named_reservation(mounted: tuple[TestClient, Ledger]) -> None:
    client, _ledger = mounted
    reservation = client.post("/tb/budget/reserve", json=CALL | {"feature": "search", "user": "carol"}).json()
    assert client.post("/tb/budget/release", json={"reservation": reservation}).json()["released"] is True
    rows = client.get("/tb/budgets", params={"feature": "search", "user": "carol"}).json()["budgets"]
    assert [r["used"] for r in rows] == ["0"]
