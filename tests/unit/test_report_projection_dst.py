"""The month-end projection in months with a DST change: never below what was already spent.

A month with a DST fall-back is an hour longer than its days * 86,400 s (one with a
spring-forward an hour shorter); the projection scales the month-to-date spend by the month's
real length in the report's time zone, computed here from ``zoneinfo`` on its own.
"""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report
from tokenbudget_core.usage import Usage

DOLLAR = Usage(input_tokens=400_000)
"""$1.00 on gpt-4o ($2.50 per million input tokens)."""

MONTHS = [
    ("America/New_York", 2026, 11),  # fall-back on Nov 1: the month is 30 days + 1 h
    ("America/New_York", 2026, 3),  # spring-forward on Mar 8: 31 days - 1 h
    ("Europe/London", 2026, 10),  # fall-back on Oct 25
    ("Australia/Lord_Howe", 2026, 10),  # a 30-minute change (Oct 4)
    ("America/Santiago", 2026, 9),  # local midnight skipped on Sep 6
    ("UTC", 2026, 11),
]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def month_seconds(tz: ZoneInfo, year: int, month: int) -> Decimal:
    """The month's real length in ``tz``: next month's first local midnight minus this one's."""
    nxt = (year + 1, 1) if month == 12 else (year, month + 1)
    end = datetime(*nxt, 1, tzinfo=tz).timestamp()
    return Decimal(str(end)) - Decimal(str(datetime(year, month, 1, tzinfo=tz).timestamp()))


def spent_a_dollar_a_day(
    tmp_path: Path, zone: str, year: int, month: int, *, through: int = 31
) -> tuple[Ledger, Clock]:
    """$1 at local noon on each day of the month up to ``through``."""
    clock = Clock()
    ledger = Ledger("memory://", timezone=zone, clock=clock, spool_path=tmp_path / "spool.jsonl")
    tz = ZoneInfo(zone)
    for day in range(1, min(through, calendar.monthrange(year, month)[1]) + 1):
        clock.now = datetime(year, month, day, 12, tzinfo=tz).timestamp()
        ledger.record(DOLLAR, model="gpt-4o", user="u")
    return ledger, clock


@pytest.mark.parametrize(("zone", "year", "month"), MONTHS)
def test_at_the_months_last_second_the_projection_is_what_was_spent(
    tmp_path: Path, zone: str, year: int, month: int
) -> None:
    ledger, clock = spent_a_dollar_a_day(tmp_path, zone, year, month)
    days = calendar.monthrange(year, month)[1]
    clock.now = datetime(year, month, days, 23, 59, 59, tzinfo=ZoneInfo(zone)).timestamp()
    p = build_report(ledger, last_days=1).projection
    assert p.month == f"{year}-{month:02d}"
    assert p.month_to_date_usd == days
    assert p.projected_usd is not None
    # one second short of the month's end: the spend of one more second at this pace, no more
    one_more_second = p.month_to_date_usd / (month_seconds(ZoneInfo(zone), year, month) - 1)
    assert p.month_to_date_usd <= p.projected_usd <= p.month_to_date_usd + one_more_second + Decimal("1e-9")
    assert p.days_in_month == days
    assert days - Decimal("0.0001") <= p.elapsed_days <= days


@pytest.mark.parametrize(("zone", "year", "month"), MONTHS)
def test_the_projection_never_falls_below_the_month_to_date(
    tmp_path: Path, zone: str, year: int, month: int
) -> None:
    """Every 5 hours of the month from its second day: the month's real length / real elapsed."""
    ledger, clock = spent_a_dollar_a_day(tmp_path, zone, year, month)
    tz = ZoneInfo(zone)
    first = Decimal(str(datetime(year, month, 1, tzinfo=tz).timestamp()))
    length = month_seconds(tz, year, month)
    days = calendar.monthrange(year, month)[1]
    at = datetime(year, month, 2, tzinfo=tz).timestamp()
    end = datetime(year, month, days, 23, 59, 59, tzinfo=tz).timestamp()
    checked = 0
    while at <= end:
        clock.now = at
        p = build_report(ledger, last_days=1).projection
        elapsed = Decimal(str(at)) - first
        assert p.projected_usd == (p.month_to_date_usd * length / elapsed).quantize(Decimal("1e-9"))
        assert p.projected_usd >= p.month_to_date_usd
        assert 0 < p.elapsed_days <= p.days_in_month == days
        assert abs(p.elapsed_days - elapsed * days / length) <= Decimal("5e-7")
        checked += 1
        at += timedelta(hours=5).total_seconds()
    assert checked >= 5 * 28 - 6


def test_after_a_spring_forward_the_month_is_an_hour_shorter(tmp_path: Path) -> None:
    """New York, 2026-03-09 00:00 local: 8 days less an hour elapsed of 31 days less an hour."""
    ledger, clock = spent_a_dollar_a_day(tmp_path, "America/New_York", 2026, 3, through=8)
    clock.now = datetime(2026, 3, 9, tzinfo=ZoneInfo("America/New_York")).timestamp()
    p = build_report(ledger, last_days=1).projection
    assert p.month_to_date_usd == 8
    hours = Decimal(8 * 24 - 1)
    expected = (Decimal(8) * (31 * 24 - 1) / hours).quantize(Decimal("1e-9"))
    assert p.projected_usd == expected  # 31.120...: with days of 86,400 s it was 31.162...
