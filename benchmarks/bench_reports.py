"""Memory and time of a report's p50/p95 over a million calls, next to loading and sorting them all.

Run: ``.venv/bin/python benchmarks/bench_reports.py``. A SQLite ledger (the embedded default)
holds one feature's cost samples over three days (``CALLS`` in all, a long-tailed spread). The
report's percentiles (:func:`tokenbudget_core.percentiles.nearest_ranks` over a
:class:`~tokenbudget_core.stores.base.CallCostSnapshot`, read in chunks) are timed and their
peak Python memory traced (``tracemalloc``), next to the way every release before did it and
most tools do: read every sample into one list (``call_costs_many``), sort it, pick the ranks.
Both must give the same p50/p95. Two spreads: a long tail (read in no particular order) and each
day in a band of its own, rising (the first values read are unlike the rest). Results are printed
and saved to ``benchmarks/results/reports.json``.
"""

from __future__ import annotations

import random
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _common import save

from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.money import nanos_to_usd
from tokenbudget_core.reports import build_report
from tokenbudget_core.stores.base import call_costs_many
from tokenbudget_core.stores.sqlite import SQLiteStore
from tokenbudget_core.usage import Usage

CALLS = 1_000_000
DAYS = 3
NOW = datetime(2026, 11, 23, 18, tzinfo=UTC)


SPREADS = {
    "long tail": lambda rng, day: int(rng.paretovariate(1.3) * 40_000),
    # each day in a narrow band of its own, rising day by day (read in that order: the first
    # values read are unlike the rest, the case that needs a second sample)
    "day bands": lambda rng, day: int((40_000 + 4_000 * day) * (1 + rng.uniform(-0.05, 0.05))),
}


def fill(path: Path, spread: Callable[[random.Random, int], int]) -> list[str]:
    """A ledger file with one call per day through the ledger (its rollup rows), then the rest of
    the day's samples written straight into the samples table (set-up speed only)."""
    ledger = Ledger(SQLiteStore(f"sqlite:///{path}"), policy=BudgetPolicy(), clock=NOW.timestamp)
    days = []
    for d in range(DAYS):
        at = NOW - timedelta(days=d)
        ledger.record(Usage(input_tokens=500, output_tokens=80), model="gpt-4o-mini", feature="chat", at=at)
        days.append(ledger.day(at))
    ledger.close()
    rng = random.Random(1)
    with sqlite3.connect(path) as db:
        for d, day in enumerate(sorted(days)):
            rows = ((day, "chat", spread(rng, d)) for _ in range(CALLS // DAYS - 1))
            db.executemany("INSERT INTO call_costs VALUES (?, ?, ?)", rows)
    return days


def load_and_sort(store: SQLiteStore, days: list[str]) -> tuple[Any, Any]:
    """The peer: every sample in one list, sorted, nearest ranks picked."""
    found = call_costs_many(store, [(d, "chat") for d in days])
    costs = sorted(c for d in days for c in found[(d, "chat")])
    rank = lambda p: max(-(-p * len(costs) // 100), 1) - 1  # noqa: E731
    return nanos_to_usd(costs[rank(50)]), nanos_to_usd(costs[rank(95)])


def measure(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Best of 3 seconds, then peak traced MB of one more run, and the answer."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        answer = fn()
        best = min(best, time.perf_counter() - start)
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return best, peak, answer


def run(spread: Callable[[random.Random, int], int]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.db"
        days = fill(path, spread)
        store = SQLiteStore(f"sqlite:///{path}", read_only=True)
        ledger = Ledger(store, clock=NOW.timestamp, spool_path=Path(tmp) / "spool")

        def ours() -> tuple[Any, Any]:
            [stats] = build_report(ledger, days=days).call_costs
            return stats.p50_usd, stats.p95_usd

        ours_s, ours_mb, ours_answer = measure(ours)
        base_s, _, _ = measure(lambda: build_report(ledger, days=days, percentiles=False))
        peer_s, peer_mb, peer_answer = measure(lambda: load_and_sort(store, days))
        store.close()
    assert ours_answer == peer_answer, (ours_answer, peer_answer)
    return {
        "p50_usd": str(ours_answer[0]),
        "p95_usd": str(ours_answer[1]),
        "report_s": round(ours_s, 3),
        "report_without_percentiles_s": round(base_s, 3),
        "load_and_sort_s": round(peer_s, 3),
        "report_peak_mb": round(ours_mb, 1),
        "load_and_sort_peak_mb": round(peer_mb, 1),
        "memory_ratio_load_and_sort_over_ours": round(peer_mb / ours_mb, 1),
        "time_ratio_ours_over_load_and_sort": round((ours_s - base_s) / peer_s, 2),
    }


def main() -> None:
    result: dict[str, Any] = {"calls": CALLS, "days": DAYS}
    for name, spread in SPREADS.items():
        result[name] = run(spread)
        print(name)
        for k, v in result[name].items():
            print(f"  {k:40} {v}")
    print(f"saved {save('reports', result)}")


if __name__ == "__main__":
    main()
