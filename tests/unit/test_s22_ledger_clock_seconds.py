"""A ledger's clock must read epoch seconds: one in milliseconds or nanoseconds (no calendar
date) is refused by ``Ledger()`` naming ``clock`` and the fix, and one that goes out of range
later makes each call raise that named error, not a bare ValueError from datetime (review s22 #2)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tokenbudget_core import InvalidInputError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.usage import Usage

NOW = 1_795_500_000.0  # 2026-11-24, epoch seconds


@pytest.mark.parametrize(
    "clock",
    [lambda: NOW * 1000, lambda: NOW * 1_000_000_000, time.time_ns, lambda: -NOW * 1000],
    ids=["milliseconds", "nanoseconds", "time_ns", "far past"],
)
def test_a_clock_that_does_not_read_epoch_seconds_is_refused_at_construction(
    clock: Callable[[], float],
) -> None:
    with pytest.raises(InvalidInputError) as e:
        Ledger("memory://", clock=clock)
    assert e.value.field == "clock"
    assert "time.time" in str(e.value)
    assert "epoch seconds" in str(e.value)


def test_a_zone_where_the_clocks_reading_has_no_date_is_refused_too() -> None:
    last_second = 253_402_300_799.0  # 9999-12-31T23:59:59 UTC: year 10000 in Kiritimati (+14)
    assert Ledger("memory://", clock=lambda: last_second).day() == "9999-12-31"
    with pytest.raises(InvalidInputError) as e:
        Ledger("memory://", clock=lambda: last_second, timezone="Pacific/Kiritimati")
    assert e.value.field == "clock"


def test_a_clock_that_goes_out_of_range_later_makes_each_call_raise_the_named_error() -> None:
    readings = [NOW]
    ledger = Ledger("memory://", clock=lambda: readings[-1])
    assert ledger.day() == "2026-11-24"
    calls: list[Callable[[], object]] = [
        ledger.day,
        lambda: ledger.reserve(model="gpt-4o", input_tokens=10, max_output_tokens=10),
        lambda: ledger.record(Usage(input_tokens=1, output_tokens=1), model="gpt-4o"),
        ledger.state,
    ]
    for reading in (NOW * 1000, float("nan"), float("inf")):
        readings.append(reading)
        for call in calls:
            with pytest.raises(InvalidInputError) as e:
                call()
            assert e.value.field == "clock"
    readings.append(NOW)
    assert ledger.day() == "2026-11-24"


def test_a_time_passed_in_still_names_its_own_argument() -> None:
    ledger = Ledger("memory://", clock=lambda: NOW)
    with pytest.raises(InvalidInputError) as e:
        ledger.day(NOW * 1000)
    assert e.value.field == "at"
    assert ledger.day(NOW - 86_400) == "2026-11-23"
    assert ledger.day() == "2026-11-24"


def test_a_clock_gone_bad_between_a_reserve_and_its_settling_is_a_named_error(tmp_path: Path) -> None:
    """Commit, release and a report read the clock too: the same named error there (a SQLite
    ledger's commit reads it; the memory store's needs no time), never a bare one."""
    from tokenbudget_core.reports import build_report

    readings = [NOW]
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}", clock=lambda: readings[-1], alerts=[])
    held = [ledger.reserve(model="gpt-4o", input_tokens=10, max_output_tokens=10) for _ in range(2)]
    for reading in (float("nan"), float("inf")):
        readings.append(reading)
        calls: list[Callable[[], object]] = [
            lambda: ledger.commit(held[0], Usage(input_tokens=10, output_tokens=1)),
            lambda: ledger.release(held[1]),
            lambda: build_report(ledger, last_days=1),
        ]
        for call in calls:
            with pytest.raises(InvalidInputError) as e:
                call()
            assert e.value.field == "clock"
    readings.append(NOW)
    ledger.commit(held[0], Usage(input_tokens=10, output_tokens=1))  # once the clock is right again
    assert build_report(ledger, last_days=1).totals.requests == 1
    ledger.close()


def test_a_clock_reading_too_large_for_a_float_is_refused_at_construction() -> None:
    with pytest.raises(InvalidInputError) as e:
        Ledger("memory://", clock=lambda: 10**400)
    assert e.value.field == "clock"
