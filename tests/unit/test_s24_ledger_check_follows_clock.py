"""``Ledger.check`` answers for the ledger as it is now: after ``ledger.clock = ...`` (the demo
pins a ledger's clock this way) or another time zone, it judges the same day ``reserve`` does,
not the one of the clock the ledger had at its first check."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.errors import BudgetExceededError, InvalidInputError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")

DAY1 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC).timestamp()
DAY2 = DAY1 + 86_400
CALL = {"model": "gpt-4o", "input_tokens": 10_000, "max_output_tokens": 0}  # $0.025


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'l.db'}"


def test_check_judges_the_day_of_a_clock_assigned_after_its_first_call(url: str) -> None:
    ledger = Ledger(url, policy=BudgetPolicy(daily_usd=Decimal("0.1")), clock=lambda: DAY1)
    assert ledger.check(**CALL).step == "normal"  # type: ignore[arg-type]
    ledger.record(Usage(input_tokens=40_000), model="gpt-4o")  # $0.10: day 1 is full
    with pytest.raises(BudgetExceededError):
        ledger.check(**CALL)  # type: ignore[arg-type]
    ledger.clock = lambda: DAY2  # a new day: the budget is fresh
    assert ledger.check(**CALL).step == "normal"  # type: ignore[arg-type]
    assert ledger.reserve(**CALL).step == "normal"  # type: ignore[arg-type]
    ledger.clock = lambda: DAY1  # and back: day 1 is still full, for both
    with pytest.raises(BudgetExceededError):
        ledger.check(**CALL)  # type: ignore[arg-type]
    with pytest.raises(BudgetExceededError):
        ledger.reserve(**CALL)  # type: ignore[arg-type]
    ledger.close()


def test_check_judges_the_day_of_a_time_zone_assigned_after_its_first_call(url: str) -> None:
    # 20:00 UTC on day 1 is already day 2 in Tokyo
    evening = DAY1 + 8 * 3_600
    ledger = Ledger(url, policy=BudgetPolicy(daily_usd=Decimal("0.1")), clock=lambda: evening)
    ledger.record(Usage(input_tokens=40_000), model="gpt-4o")  # day 1 (UTC) is full
    with pytest.raises(BudgetExceededError):
        ledger.check(**CALL)  # type: ignore[arg-type]
    ledger.tz = ZoneInfo("Asia/Tokyo")
    assert ledger.day() == "2026-11-24"
    assert ledger.check(**CALL).step == "normal"  # type: ignore[arg-type]
    assert ledger.reserve(**CALL).day == "2026-11-24"  # type: ignore[arg-type]
    ledger.close()


def test_a_time_zone_that_is_not_a_zoneinfo_is_refused_on_assignment() -> None:
    ledger = Ledger("memory://")
    with pytest.raises(InvalidInputError) as raised:
        ledger.tz = "Europe/Berlin"  # type: ignore[assignment]
    assert raised.value.field == "tz"
    assert ledger.tz.key == "UTC"
