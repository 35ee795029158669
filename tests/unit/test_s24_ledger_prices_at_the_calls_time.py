"""The ledger prices usage at the moment it happened: a reserve and a commit at the ledger's clock
(the instant it takes the day from), a ``record(at=...)`` at ``at``, never at the real time of
the call to the ledger. genai-prices has time-of-day prices (DeepSeek's off-peak hours, half
price from 16:30 to 00:30 UTC) and dated price changes."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from tokenbudget_core.ledger import Ledger
from tokenbudget_core.pricing import cost_of
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")

PEAK = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
OFF_PEAK = datetime(2026, 11, 20, 20, 0, tzinfo=UTC)
USAGE = Usage(input_tokens=1_000_000, output_tokens=100_000)
MODEL = "deepseek-chat"


def test_deepseek_chat_has_a_time_of_day_price() -> None:
    """(what the other tests rely on: the two instants price differently)"""
    assert cost_of(USAGE, MODEL, at=PEAK) == 2 * cost_of(USAGE, MODEL, at=OFF_PEAK)


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'l.db'}"


class Clock:
    def __init__(self, at: datetime) -> None:
        self.t = at.timestamp()

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize("when", [PEAK, OFF_PEAK], ids=["peak", "off-peak"])
def test_reserve_and_commit_are_priced_at_the_ledgers_clock(url: str, when: datetime) -> None:
    ledger = Ledger(url, clock=Clock(when))
    expected = cost_of(USAGE, MODEL, at=when)
    for _ in range(2):  # the second call takes the lane the first built (memory), if any
        r = ledger.reserve(model=MODEL, input_tokens=1_000_000, max_output_tokens=100_000)
        assert r.reserved_usd == expected
        assert ledger.commit(r, USAGE).cost_usd == expected
        assert ledger.check(
            model=MODEL, input_tokens=1_000_000, max_output_tokens=100_000
        ).worst_case_usd == (expected)
    ledger.close()


def test_a_clock_moved_into_off_peak_hours_prices_the_next_commit_off_peak(url: str) -> None:
    clock = Clock(PEAK)
    ledger = Ledger(url, clock=clock)
    r = ledger.reserve(model=MODEL, input_tokens=1_000_000, max_output_tokens=100_000)
    ledger.commit(r, USAGE)  # a lane (memory) built at peak prices
    clock.t = OFF_PEAK.timestamp()
    r = ledger.reserve(model=MODEL, input_tokens=1_000_000, max_output_tokens=100_000)
    assert ledger.commit(r, USAGE).cost_usd == cost_of(USAGE, MODEL, at=OFF_PEAK)
    ledger.close()


@pytest.mark.parametrize("as_datetime", [True, False], ids=["datetime", "epoch"])
def test_record_at_prices_at_at(url: str, as_datetime: bool) -> None:
    now = Clock(datetime(2026, 11, 21, 12, 0, tzinfo=UTC))  # peak, the day after: recorded late
    ledger = Ledger(url, clock=now)
    charged = {}
    for name, when in (("peak", PEAK), ("off-peak", OFF_PEAK)):
        at = when if as_datetime else when.timestamp()
        charged[name] = ledger.record(USAGE, model=MODEL, at=at, request_id=name).cost_usd
    assert charged == {"peak": cost_of(USAGE, MODEL, at=PEAK), "off-peak": cost_of(USAGE, MODEL, at=OFF_PEAK)}
    rows = ledger.store.rollup([ledger.day(PEAK)])
    assert sum(row.values["cost_nanos"] for row in rows) == int(
        (charged["peak"] + charged["off-peak"]) * Decimal(10**9)
    )
    ledger.close()
