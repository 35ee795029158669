"""Four processes share one SQLite ledger: the budget holds and every applied commit is counted once.

The workers go in rounds: each reserves, all meet at a barrier (so every reservation granted in
the round is held at once, the moment a limit check that missed another process's hold would
overspend), then each commits the full amount it reserved (or releases it) and all meet again.
What the store granted minus what was released is then exactly what it let the workers spend,
and must fit in the limit: an exact check, not a sample of the totals in flight.

Then EDGE_ROUNDS rounds at the edge of a budget of their own (EDGE_LIMIT): every worker asks
for more than half of it, at moments spread over a fraction of a millisecond, holds what it got
until all have asked, and releases it. One grant fits, two never: a limit check that is not
atomic with its reserve (read in one transaction, reserved in another) lets two through as soon
as one worker's check falls between another's check and its reserve.
"""

from __future__ import annotations

import multiprocessing
import queue
import random
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
EDGE = "user/chat/edge"
EDGE_LIMIT = 100
EDGE_AMOUNT = EDGE_LIMIT // 2 + 1
"""One worker's edge reservation fits in EDGE_LIMIT; two never do."""
EDGE_ROUNDS = 150


@dataclass(frozen=True)
class Report:
    """What one worker saw."""

    worker: int
    applied: int
    """Sum of the amounts of the commits the store reported as applied."""
    granted: int
    """How many reserves the store granted."""
    granted_amount: int
    """Sum of the amounts the store granted."""
    refused: int
    released: int
    released_amount: int
    """Sum of the amounts of the granted reservations released (not committed)."""
    duplicate_applied: int
    """Second commits of one request id that the store applied anyway (must be 0)."""
    max_used: int
    """The largest ``spent + reserved`` of the user scope the worker observed."""
    edge_granted: tuple[bool, ...]
    """Per edge round, whether the store granted this worker's edge reservation."""


def _amount(worker: int, call: int) -> int:
    """A deterministic, irregular reservation between 50 and 149."""
    return 50 + (worker * 7_919 + call * 104_729) % 100


def _charges(amount: int) -> list[Check]:
    return [
        Check(scope=USER, metric="nanos", amount=amount),
        Check(scope="global", metric="nanos", amount=amount),
    ]


def _work(url: str, worker: int, start: Any, results: Any) -> None:
    """One process: CALLS rounds of reserve, barrier, settle, barrier against the shared budget."""
    applied = granted = granted_amount = refused = released = released_amount = 0
    duplicate_applied = max_used = 0
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
            start.wait()  # every reservation granted in this round is held at once
            if not outcome.ok:
                refused += 1
            elif call % 10 == 0:
                granted, granted_amount = granted + 1, granted_amount + amount
                if store.release(DAY, rid, 2_000):
                    released, released_amount = released + 1, released_amount + amount
            else:
                granted, granted_amount = granted + 1, granted_amount + amount
                # The full reservation: granted - released is then exactly what was spent.
                request = CommitRequest(
                    day=DAY,
                    request_id=rid,
                    charges=_charges(amount),
                    rollup_key="chat/alice/gpt-4o",
                    rollup={"requests": 1, "cost_nanos": amount},
                    now_ms=2_000,
                )
                if store.commit(request).applied:
                    applied += amount
                if call % 10 == 1 and store.commit(request).applied:  # a retried settle
                    duplicate_applied += 1
                if call % 10 == 2:
                    spent, reserved = store.totals(DAY, [(USER, "nanos")], 2_000)[(USER, "nanos")]
                    max_used = max(max_used, spent + reserved)
            start.wait()  # the round is settled before the next one reserves
        edge_granted = _edge_rounds(store, worker, start)
    report = Report(
        worker,
        applied,
        granted,
        granted_amount,
        refused,
        released,
        released_amount,
        duplicate_applied,
        max_used,
        edge_granted,
    )
    results.put(report)


def _edge_rounds(store: SQLiteStore, worker: int, start: Any) -> tuple[bool, ...]:
    """EDGE_ROUNDS rounds: reserve EDGE_AMOUNT of EDGE_LIMIT, hold it until every worker has
    asked, release it; whether each was granted."""
    jitter = random.Random(worker)
    granted = []
    for n in range(EDGE_ROUNDS):
        rid = f"edge-w{worker}-{n}"
        checks = [Check(scope=EDGE, metric="nanos", amount=EDGE_AMOUNT, limit=EDGE_LIMIT)]
        time.sleep(jitter.random() * 0.0005)  # the workers' checks fall at moments spread apart
        outcome = store.reserve(
            ReserveRequest(day=DAY, request_id=rid, checks=checks, now_ms=1_000, lease_ms=10**9)
        )
        granted.append(outcome.ok)
        start.wait()  # every grant of the round is held at once
        if outcome.ok:
            store.release(DAY, rid, 2_000)
        start.wait()
    return tuple(granted)


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
    # What the store let the workers hold at once, and so spend: within the limit, exactly.
    assert sum(r.granted_amount for r in reports) - sum(r.released_amount for r in reports) <= LIMIT
    # At the edge: in every round one worker's reservation was granted, never two at once.
    assert [sum(r.edge_granted[n] for r in reports) for n in range(EDGE_ROUNDS)] == [1] * EDGE_ROUNDS
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
