"""Four processes share one SQLite ledger: the budget holds and every applied commit is counted once."""

from __future__ import annotations

import multiprocessing
import queue
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tokenbudget_core.stores.base import Check, CommitRequest, ReserveRequest
from tokenbudget_core.stores.sqlite import SQLiteStore

DAY = "2026-11-23"
WORKERS = 4
CALLS = 250
LIMIT = 40_000
"""Nano-USD of the shared user budget: about half of what the workers would spend unlimited."""
USER = "user/chat/alice"


@dataclass(frozen=True)
class Report:
    """What one worker saw."""

    worker: int
    applied: int
    """Sum of the amounts of the commits the store reported as applied."""
    granted: int
    refused: int
    released: int
    duplicate_applied: int
    """Second commits of one request id that the store applied anyway (must be 0)."""
    max_used: int
    """The largest ``spent + reserved`` of the user scope the worker observed."""


def _amount(worker: int, call: int) -> int:
    """A deterministic, irregular reservation between 50 and 149."""
    return 50 + (worker * 7_919 + call * 104_729) % 100


def _charges(amount: int) -> list[Check]:
    return [
        Check(scope=USER, metric="nanos", amount=amount),
        Check(scope="global", metric="nanos", amount=amount),
    ]


def _work(url: str, worker: int, start: Any, results: Any) -> None:
    """One process: CALLS reserve/settle cycles against the shared budget."""
    applied = granted = refused = released = duplicate_applied = max_used = 0
    start.wait()  # all four create the new file at once (the switch to WAL races)
    with closing(SQLiteStore(url)) as store:
        start.wait()  # then all four spend at once
        for call in range(CALLS):
            rid = f"w{worker}-{call}"
            amount = _amount(worker, call)
            checks = [
                Check(scope=USER, metric="nanos", amount=amount, limit=LIMIT),
                Check(scope="global", metric="nanos", amount=amount),
            ]
            outcome = store.reserve(
                ReserveRequest(day=DAY, request_id=rid, checks=checks, now_ms=1_000, lease_ms=10**9)
            )
            if not outcome.ok:
                refused += 1
                continue
            granted += 1
            if call % 10 == 0:
                released += store.release(DAY, rid, 2_000)
                continue
            actual = amount - (call % 5) * amount // 10  # between 60% and 100% of the reservation
            request = CommitRequest(
                day=DAY,
                request_id=rid,
                charges=_charges(actual),
                rollup_key="chat/alice/gpt-4o",
                rollup={"requests": 1, "cost_nanos": actual},
                now_ms=2_000,
            )
            if store.commit(request).applied:
                applied += actual
            if call % 10 == 1 and store.commit(request).applied:  # a retried settle
                duplicate_applied += 1
            if call % 10 == 2:
                spent, reserved = store.totals(DAY, [(USER, "nanos")], 2_000)[(USER, "nanos")]
                max_used = max(max_used, spent + reserved)
    results.put(Report(worker, applied, granted, refused, released, duplicate_applied, max_used))


@pytest.mark.integration
def test_four_processes_share_one_budget_exactly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(WORKERS)
    results = ctx.Queue()
    procs = [ctx.Process(target=_work, args=(url, w, start, results)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    reports: list[Report] = []
    deadline = time.monotonic() + 60
    try:
        while len(reports) < WORKERS:
            try:
                reports.append(results.get(timeout=0.5))
            except queue.Empty:
                if time.monotonic() > deadline or any(p.exitcode not in (None, 0) for p in procs):
                    pytest.fail(f"a worker died or hung: exit codes {[p.exitcode for p in procs]}")
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.terminate()
                p.join()
        results.close()
        results.join_thread()
    assert [p.exitcode for p in procs] == [0] * WORKERS

    with closing(SQLiteStore(url)) as store:
        totals = store.totals(DAY, [(USER, "nanos"), ("global", "nanos")], 3_000)
        [row] = store.rollup([DAY])
    applied = sum(r.applied for r in reports)
    assert totals[(USER, "nanos")] == (applied, 0)  # every applied commit counted once; nothing left reserved
    assert totals[("global", "nanos")] == (applied, 0)
    assert applied <= LIMIT
    assert max(r.max_used for r in reports) <= LIMIT
    assert sum(r.refused for r in reports) > 0  # the budget ran out part-way
    assert sum(r.granted + r.refused for r in reports) == WORKERS * CALLS
    assert sum(r.released for r in reports) > 0
    assert sum(r.duplicate_applied for r in reports) == 0
    assert row.values["cost_nanos"] == applied
    assert row.values["requests"] == sum(r.granted for r in reports) - sum(r.released for r in reports)
