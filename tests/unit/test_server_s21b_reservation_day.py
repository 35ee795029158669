"""``/budget/commit`` and ``/budget/release`` take the reservation's ``day`` only as
``/budget/reserve`` writes it (``YYYY-MM-DD``) and only for a day a reservation can be of: at
most tomorrow, at least the longest lease and a day before today, in the ledger's time zone.

The store keeps a reservation's state per day and request id: a day edited on the way back
(``9999-12-31``, ``0001-01-01``, today spelled ``2026-W47-3``) was a fresh charge of the same
call, once per day sent, while the real hold waited for its lease.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.ledger import MAX_LEASE_SECONDS, Ledger
from tokenbudget_core.reports import build_report
from tokenbudget_core.server import create_app

pytestmark = pytest.mark.usefixtures("isolated")

DAY_SECONDS = 86_400
AT = datetime(2026, 11, 18, 12, tzinfo=UTC).timestamp()  # a Wednesday: 2026-W47-3
DAY = "2026-11-18"
USAGE = {"input_tokens": 1_000, "output_tokens": 100}
SEND_BACK = "send the reservation back exactly as /budget/reserve returned it"


class Clock:
    def __init__(self) -> None:
        self.now = AT

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(clock: Clock) -> Ledger:
    return Ledger("memory://", policy=BudgetPolicy(daily_usd=Decimal("1")), clock=clock)


@pytest.fixture
def client(ledger: Ledger) -> Iterator[TestClient]:
    with TestClient(create_app(ledger)) as c:
        yield c


def _reserve(client: TestClient, request_id: str) -> dict[str, Any]:
    body = {"model": "gpt-4o", "input_tokens": 1_000, "max_output_tokens": 500, "request_id": request_id}
    response = client.post("/budget/reserve", json=body)
    assert response.status_code == 201, response.text
    reservation: dict[str, Any] = response.json()
    return reservation


def _assert_day_refused(response: Any) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == "body.reservation.day", body
    assert body["fix"] == SEND_BACK, body
    assert SEND_BACK in body["message"]


def _spend(ledger: Ledger, day: str) -> tuple[Decimal, int]:
    t = build_report(ledger, day=day).totals
    return t.cost_usd, t.requests


@pytest.mark.parametrize("endpoint", ["/budget/commit", "/budget/release"])
@pytest.mark.parametrize(
    "day",
    ["9999-12-31", "0001-01-01", "2026-W47-3", "20261118", "2026-11-18T00:00", " 2026-11-18", "2026-11-31"],
)
def test_a_day_not_as_reserve_returned_it_is_refused(client: TestClient, endpoint: str, day: str) -> None:
    reservation = _reserve(client, "call-1")
    assert reservation["day"] == DAY
    body: dict[str, Any] = {"reservation": dict(reservation, day=day)}
    if endpoint == "/budget/commit":
        body["usage"] = USAGE
    _assert_day_refused(client.post(endpoint, json=body))


def test_one_call_is_charged_once_whatever_day_the_client_sends(client: TestClient, ledger: Ledger) -> None:
    """The reviewer's repro: three edited days, then the real one; one charge in all."""
    reservation = _reserve(client, "call-1")
    for day in ("9999-12-31", "0001-01-01", "2026-W47-3"):
        edited = {"reservation": dict(reservation, day=day), "usage": USAGE}
        _assert_day_refused(client.post("/budget/commit", json=edited))
    charge = client.post("/budget/commit", json={"reservation": reservation, "usage": USAGE}).json()
    assert charge["applied"] is True
    cost, requests = _spend(ledger, DAY)
    assert (cost, requests) == (Decimal(charge["cost_usd"]), 1)
    for day in ("9999-12-31", "0001-01-01"):
        assert _spend(ledger, day) == (Decimal(0), 0)
    # the hold was settled by the one commit: nothing is left reserved today
    assert ledger.state().headroom["daily_usd"] == Decimal(1) - cost


def _settle_after(client: TestClient, clock: Clock, seconds: float, endpoint: str) -> Any:
    """Reserve now, move the clock by ``seconds``, then settle the reservation as returned."""
    reservation = _reserve(client, f"call-{endpoint}-{seconds}")
    clock.now = AT + seconds
    body: dict[str, Any] = {"reservation": reservation}
    if endpoint == "/budget/commit":
        body["usage"] = USAGE
    return client.post(endpoint, json=body)


@pytest.mark.parametrize("endpoint", ["/budget/commit", "/budget/release"])
def test_a_reservation_settled_within_the_longest_lease_and_a_day_is_taken(
    client: TestClient, clock: Clock, endpoint: str
) -> None:
    oldest = MAX_LEASE_SECONDS // DAY_SECONDS + 1  # 8 days
    response = _settle_after(client, clock, oldest * DAY_SECONDS, endpoint)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("endpoint", ["/budget/commit", "/budget/release"])
def test_a_reservation_older_than_the_longest_lease_and_a_day_is_refused(
    client: TestClient, clock: Clock, endpoint: str
) -> None:
    oldest = MAX_LEASE_SECONDS // DAY_SECONDS + 1
    response = _settle_after(client, clock, (oldest + 1) * DAY_SECONDS, endpoint)
    _assert_day_refused(response)
    assert "/usage/record" in response.json()["message"]  # where usage that old goes


@pytest.mark.parametrize("endpoint", ["/budget/commit", "/budget/release"])
def test_tomorrow_is_taken_the_day_after_is_refused(client: TestClient, clock: Clock, endpoint: str) -> None:
    """A worker whose clock is ahead may reserve for tomorrow; no reservation is of a later day."""
    assert _settle_after(client, clock, -DAY_SECONDS, endpoint).status_code == 200
    clock.now = AT
    _assert_day_refused(_settle_after(client, clock, -2 * DAY_SECONDS, endpoint))


def test_the_days_are_the_ledgers_time_zone(clock: Clock) -> None:
    """At 12:00 UTC on the 18th it is already the 19th in Kiritimati (UTC+14): the 20th is its
    tomorrow, the 21st is after it."""
    ledger = Ledger("memory://", timezone="Pacific/Kiritimati", clock=clock)
    with TestClient(create_app(ledger)) as client:
        reservation = _reserve(client, "call-1")
        assert reservation["day"] == "2026-11-19"

        def release_on(day: str) -> Any:
            return client.post("/budget/release", json={"reservation": dict(reservation, day=day)})

        assert release_on("2026-11-20").status_code == 200
        refused = release_on("2026-11-21")
        _assert_day_refused(refused)
        assert "Pacific/Kiritimati" in refused.json()["message"]
