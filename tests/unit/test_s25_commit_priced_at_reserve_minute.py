"""A call is charged at the prices of the minute it was reserved (when it landed at the
provider), not at the minute its commit arrives.

DeepSeek's off-peak hours end at 00:30 UTC: a call reserved at 00:29 at the off-peak price and
committed at 00:31 was priced at the peak price, double its worst case, so a hard limit its
reservation had checked was exceeded by the rise. The reservation now carries the minute it was
priced at (``Reservation.priced_minute``), and every commit path prices at it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.pricing import cost_of
from tokenbudget_core.server import create_app
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")

MODEL = "deepseek-chat"
OFF_PEAK = datetime(2026, 11, 20, 0, 29, tzinfo=UTC)  # off-peak until 00:30
PEAK = datetime(2026, 11, 20, 0, 31, tzinfo=UTC)
WORST = Usage(input_tokens=100_000, output_tokens=20_000)


class Clock:
    def __init__(self, at: datetime) -> None:
        self.t = at.timestamp()

    def __call__(self) -> float:
        return self.t


def test_the_two_minutes_price_differently() -> None:
    """(what the other tests rely on)"""
    assert cost_of(WORST, MODEL, at=PEAK) == 2 * cost_of(WORST, MODEL, at=OFF_PEAK)


@pytest.fixture(params=["memory", "sqlite", "redis"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        return str(request.getfixturevalue("clean_redis_url"))
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'l.db'}"


def _ledger(url: str, clock: Clock, limit: Decimal | None = None) -> Ledger:
    policy = BudgetPolicy(daily_usd=limit) if limit is not None else None
    return Ledger(url, clock=clock, policy=policy)


@pytest.mark.parametrize("conversation", [None, "c-1"], ids=["lane", "general-path"])
def test_a_commit_after_the_price_rose_is_charged_at_the_reserved_minute(
    url: str, conversation: str | None
) -> None:
    clock = Clock(OFF_PEAK)
    expected = cost_of(WORST, MODEL, at=OFF_PEAK)
    ledger = _ledger(url, clock, limit=Decimal("10"))
    r = ledger.reserve(
        model=MODEL, input_tokens=100_000, max_output_tokens=20_000, user="u", conversation=conversation
    )
    assert r.reserved_usd == expected
    assert r.priced_minute == int(OFF_PEAK.timestamp() // 60)
    clock.t = PEAK.timestamp()  # the call took two minutes: the peak price began meanwhile
    charge = ledger.commit(r, WORST)
    assert charge.cost_usd == expected  # before: twice its reserved worst case
    assert ledger.state(user="u").used["daily_usd"] == expected
    ledger.close()


@pytest.mark.parametrize("how", ["settle", "commit_many"])
def test_every_commit_path_prices_at_the_reserved_minute(url: str, how: str) -> None:
    clock = Clock(OFF_PEAK)
    ledger = _ledger(url, clock)
    r = ledger.reserve(model=MODEL, input_tokens=100_000, max_output_tokens=20_000)
    clock.t = PEAK.timestamp()
    if how == "settle":
        charge = ledger.settle(r, WORST)
    else:
        (charge,) = ledger.commit_many([(r, WORST)])
    assert not isinstance(charge, Exception)
    assert charge is not None
    assert charge.cost_usd == cost_of(WORST, MODEL, at=OFF_PEAK)
    ledger.close()


def test_a_hand_made_reservation_without_a_minute_is_priced_at_commit() -> None:
    clock = Clock(OFF_PEAK)
    ledger = _ledger("memory://", clock)
    r = replace(
        ledger.reserve(model=MODEL, input_tokens=100_000, max_output_tokens=20_000), priced_minute=None
    )
    clock.t = PEAK.timestamp()
    assert ledger.commit(r, WORST).cost_usd == cost_of(WORST, MODEL, at=PEAK)


def test_a_hand_made_minute_that_is_not_an_int_is_refused_by_name() -> None:
    ledger = _ledger("memory://", Clock(OFF_PEAK))
    r = ledger.reserve(model=MODEL, input_tokens=100, max_output_tokens=20)
    with pytest.raises(InvalidInputError) as e:
        ledger.commit(replace(r, priced_minute="29"), WORST)  # type: ignore[arg-type]
    assert e.value.field == "reservation.priced_minute"


@pytest.fixture
def served() -> Iterator[tuple[TestClient, Clock]]:
    clock = Clock(OFF_PEAK)
    with TestClient(create_app(Ledger("memory://", clock=clock))) as client:
        yield client, clock


def test_over_http_the_reservation_carries_its_minute_and_the_commit_prices_at_it(
    served: tuple[TestClient, Clock],
) -> None:
    client, clock = served
    body = {"model": MODEL, "input_tokens": 100_000, "max_output_tokens": 20_000}
    reservation = client.post("/budget/reserve", json=body).json()
    assert reservation["priced_minute"] == int(OFF_PEAK.timestamp() // 60)
    clock.t = PEAK.timestamp()
    usage = {"input_tokens": 100_000, "output_tokens": 20_000}
    response = client.post("/budget/commit", json={"reservation": reservation, "usage": usage})
    assert response.status_code == 200, response.text
    assert Decimal(response.json()["cost_usd"]) == cost_of(WORST, MODEL, at=OFF_PEAK)


def test_over_http_a_minute_from_the_future_is_refused_by_name(served: tuple[TestClient, Clock]) -> None:
    client, _ = served
    body = {"model": MODEL, "input_tokens": 100, "max_output_tokens": 20}
    reservation = client.post("/budget/reserve", json=body).json()
    reservation["priced_minute"] += 3 * 24 * 60  # an edited minute (no reservation is that late)
    response = client.post(
        "/budget/commit", json={"reservation": reservation, "usage": {"input_tokens": 1, "output_tokens": 1}}
    )
    assert response.status_code == 422, response.text
    assert "priced_minute" in response.text
