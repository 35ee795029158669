"""A demo run that crosses the ledger's midnight (UTC) reports its whole run, on the day it started
on, with the savings table a run within one day gives (review s22 #1)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from langchain_tokenbudget.demo_pipeline import run_demo
from tokenbudget_core.demo_report import DemoSummary

pytestmark = pytest.mark.usefixtures("isolated")

STEP = 0.05  # seconds per clock read


class TickingClock:
    """Epoch seconds from ``start``, ``STEP`` later at each read (a deterministic run's time)."""

    def __init__(self, start: datetime) -> None:
        self.start = start.timestamp()
        self.reads = itertools.count()
        self.last = self.start

    def __call__(self) -> float:
        self.last = self.start + next(self.reads) * STEP
        return self.last


def _table(summary: DemoSummary) -> list[tuple[Any, ...]]:
    return [
        (r.stage, r.requests, r.input_tokens, r.output_tokens, r.cost_usd, r.cost_per_active_user_usd,
         r.routing_saved_usd, r.stats)
        for r in summary.rows
    ]  # fmt: skip


def _alerts(summary: DemoSummary) -> list[str]:
    """The alerts' texts, the run id left out (each run has its own)."""
    return [re.sub(r"run-[0-9a-f]{12}", "run", a.text) for a in summary.alerts]


def _run(folder: Any, clock: Callable[[], float]) -> DemoSummary:
    # 10 users x 20 turns: heavy users run into their daily budget in the budgets stage
    return run_demo(store=f"sqlite:///{folder / 'ledger.db'}", users=10, turns=20, seed=11, clock=clock)


@pytest.fixture(scope="module")
def within_one_day(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoSummary, int]:
    """The run at noon, and how many times it read the clock."""
    noon = TickingClock(datetime(2026, 11, 24, 12, 0, tzinfo=UTC))
    summary = _run(tmp_path_factory.mktemp("noon"), noon)
    return summary, next(noon.reads)


@pytest.mark.parametrize("share", [0.5, 0.9], ids=["mid-run", "in-the-budgets-stage"])
def test_a_run_across_midnight_reports_every_call_on_the_day_it_started(
    tmp_path: Any, within_one_day: tuple[DemoSummary, int], share: float
) -> None:
    within, reads = within_one_day
    assert within.controlled.stats.refused > 0  # budgets bite within the day
    assert within.alerts
    # the same run, started so that midnight falls ``share`` of the way through its clock reads
    midnight = datetime(2026, 11, 25, tzinfo=UTC).timestamp()
    late = TickingClock(datetime.fromtimestamp(midnight - int(reads * share) * STEP, UTC))
    across = _run(tmp_path, late)
    assert late.last > midnight  # the run did cross midnight
    assert across.day == "2026-11-24" == within.day
    assert _table(across) == _table(within)
    assert _alerts(across) == _alerts(within)
