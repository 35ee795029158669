"""``POST /budget/check`` answers from the store's totals: it never holds budget, even for a moment,
so a real reservation that fits is never refused because checks are in flight; and it answers as
``/budget/reserve`` would (the same refusals, per-call limits and ladder step)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.server import create_app

pytestmark = pytest.mark.usefixtures("isolated")

CALL = {"model": "gpt-4o", "input_tokens": 1_000, "max_output_tokens": 500}  # $0.0075 worst case


@pytest.fixture(params=["memory", "sqlite"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'ledger.db'}"
    policy = BudgetPolicy(
        daily_usd=Decimal("0.01"),
        features={"capped": FeatureBudget(max_output_tokens_per_call=100, user_daily_usd=Decimal("0.001"))},
    )
    led = Ledger(url, policy=policy)
    yield led
    led.close()


@pytest.fixture
def client(ledger: Ledger) -> Iterator[TestClient]:
    with TestClient(create_app(ledger)) as c:
        yield c


def test_concurrent_checks_never_make_a_fitting_reserve_fail(client: TestClient) -> None:
    stop = threading.Event()

    def checker() -> None:
        while not stop.is_set():  # refused while the reserve below holds: that is right
            assert client.post("/budget/check", json=CALL).status_code == 200

    threads = [threading.Thread(target=checker) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        refused = 0
        for _ in range(60):
            r = client.post("/budget/reserve", json=CALL)
            if r.status_code == 429:
                refused += 1
            else:
                assert client.post("/budget/release", json={"reservation": r.json()}).json()["released"]
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert refused == 0


def test_check_agrees_with_reserve(client: TestClient, ledger: Ledger) -> None:
    state_before = ledger.state()
    for body in (
        CALL,
        CALL | {"input_tokens": 2_000},  # $0.01 + output: over the daily budget
        {"model": "gpt-4o", "input_tokens": 10, "max_output_tokens": 200, "feature": "capped"},  # per call
        {"model": "gpt-4o", "input_tokens": 400, "max_output_tokens": 50, "feature": "capped", "user": "u"},
    ):
        check = client.post("/budget/check", json=body)
        assert check.status_code == 200
        assert ledger.state() == state_before  # nothing held, not even for a moment
        reserve = client.post("/budget/reserve", json=body)
        answer: dict[str, Any] = check.json()
        assert answer["allowed"] is (reserve.status_code == 201), (body, answer, reserve.text)
        if reserve.status_code == 201:
            assert answer["reserved_usd"] == reserve.json()["reserved_usd"]
            assert answer["step"] == reserve.json()["step"]
            client.post("/budget/release", json={"reservation": reserve.json()})
        else:
            refusal = reserve.json()
            for key in ("budget", "limit", "used", "requested", "scope"):
                assert answer[key] == refusal[key], key


def test_check_sees_what_others_hold(client: TestClient) -> None:
    held = client.post("/budget/reserve", json=CALL)
    assert held.status_code == 201
    refused = client.post("/budget/check", json=CALL).json()
    assert refused["allowed"] is False
    assert refused["budget"] == "daily_usd"
    assert Decimal(refused["used"]) == Decimal(held.json()["reserved_usd"])
    client.post("/budget/release", json={"reservation": held.json()})
    assert client.post("/budget/check", json=CALL).json()["allowed"] is True
