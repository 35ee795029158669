"""Many processes on one Redis ledger: the budget holds, and nothing is lost or counted twice.

Workers are separate processes (``spawn``), each with its own :class:`RedisStore`. Every
worker reports the amounts its commits actually applied; the store's totals must equal their
sum exactly.

In the budget test the workers go in rounds: each reserves, all meet at a barrier (every
reservation granted in the round is held at once, when a limit check that missed another
process's hold would overspend), then each commits the full amount it reserved (or releases
it) and all meet again. What the store granted minus what was released is then exactly what it
let them spend, and must fit in the limit. Then rounds at the edge of a budget of their own:
every worker asks for more than half of it, holds what it got until all have asked, and
releases it; one grant fits, two never (a limit check not atomic with its reserve lets two
through as soon as one worker's check falls between another's check and its reserve).

The second test kills Redis mid-run and starts it again from its append-only file: calls fail
fast with ``BudgetUnavailableError`` while it is down, workers retry with the same request ids,
and the totals still add up.
"""

from __future__ import annotations

import multiprocessing
import random
import time
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from redis_server import RedisServer
from tokenbudget_core.errors import BudgetUnavailableError
from tokenbudget_core.stores.base import Check, CommitRequest, ReserveRequest
from tokenbudget_core.stores.redis import RedisStore

pytestmark = pytest.mark.integration

DAY = "2026-11-23"
T = TypeVar("T")
EDGE_LIMIT = 100
EDGE_AMOUNT = EDGE_LIMIT // 2 + 1
"""One worker's edge reservation fits in EDGE_LIMIT; two never do."""
EDGE_ROUNDS = 100


def _checks(worker: int, amount: int, limit: int | None) -> list[Check]:
    return [
        Check(scope=f"u/{worker}", metric="nanos", amount=amount),
        Check(scope="g", metric="nanos", amount=amount, limit=limit),
    ]


def _commit(store: RedisStore, worker: int, rid: str, amount: int) -> Any:
    req = CommitRequest(
        day=DAY,
        request_id=rid,
        charges=_checks(worker, amount, None),
        rollup_key=f"f/{worker}/m",
        rollup={"requests": 1, "cost_nanos": amount},
        now_ms=int(time.time() * 1000),
    )
    return store.commit(req)


def _worker(
    url: str, worker: int, calls: int, limit: int | None, pause: float, start: Any, results: Any
) -> None:
    """Reserve, then commit (sometimes twice) or release; retry every call while Redis is down.

    Puts ``(worker, applied, commits, refusals, failures, slowest_failure_s)`` on ``results``,
    or ``(worker, "error", traceback)``.
    """
    store = RedisStore(url, socket_timeout=1.0)
    rng = random.Random(worker)
    applied = commits = refusals = 0
    failures: list[float] = []

    def retried(call: Callable[[], T]) -> tuple[T, bool]:
        """The call's answer, and whether an earlier attempt failed (and so may have run)."""
        failed = False
        while True:
            started = time.monotonic()
            try:
                return call(), failed
            except BudgetUnavailableError:
                failures.append(time.monotonic() - started)
                failed = True
                time.sleep(0.05)

    try:
        start.wait(timeout=60)
        for i in range(calls):
            rid, amount = f"w{worker}-{i}", rng.randint(50, 150)
            reserve = ReserveRequest(
                day=DAY,
                request_id=rid,
                checks=_checks(worker, amount, limit),
                now_ms=int(time.time() * 1000),
                lease_ms=600_000,
            )
            outcome, _ = retried(lambda: store.reserve(reserve))
            if not outcome.ok:
                refusals += 1
                continue
            assert outcome.state == "reserved", outcome  # new, or ours from an attempt that failed
            choice = rng.random()
            if choice < 0.2:
                retried(lambda: store.release(DAY, rid, int(time.time() * 1000)))
            else:
                actual = rng.randint(0, amount)
                done, earlier_failed = retried(lambda: _commit(store, worker, rid, actual))
                # Not applied now but committed: an attempt that "failed" had gone through.
                if done.applied or (earlier_failed and done.previous == "committed"):
                    applied += actual
                    commits += 1
                if choice > 0.85:
                    again, _ = retried(lambda: _commit(store, worker, rid, actual))
                    assert not again.applied
            time.sleep(pause)
        results.put((worker, applied, commits, refusals, len(failures), max(failures, default=0.0)))
    except BaseException:
        results.put((worker, "error", traceback.format_exc()))
        raise
    finally:
        store.close()


def _budget_worker(
    url: str, worker: int, calls: int, limit: int, start: Any, results: Any, rounds: Any
) -> None:
    """``calls`` rounds: reserve, meet at ``rounds``, commit the full reservation (sometimes
    twice) or release it, meet again; then the edge rounds.

    Puts ``(worker, applied, commits, refusals, 0, 0.0, granted, released, edge_granted)`` on
    ``results`` (granted and released: sums of amounts; edge_granted: per edge round, whether
    this worker's edge reservation was granted), or ``(worker, "error", traceback)``.
    """
    store = RedisStore(url, socket_timeout=10.0)
    rng = random.Random(worker)
    applied = commits = refusals = granted = released = 0
    try:
        start.wait(timeout=60)
        for i in range(calls):
            rid, amount, choice = f"w{worker}-{i}", rng.randint(50, 150), rng.random()
            now = int(time.time() * 1000)
            checks = _checks(worker, amount, limit)
            outcome = store.reserve(
                ReserveRequest(day=DAY, request_id=rid, checks=checks, now_ms=now, lease_ms=600_000)
            )
            rounds.wait(timeout=60)  # every reservation granted in this round is held at once
            if not outcome.ok:
                refusals += 1
            elif choice < 0.2:
                granted += amount
                if store.release(DAY, rid, int(time.time() * 1000)):
                    released += amount
            else:
                granted += amount
                # The full reservation: granted - released is then exactly what was spent.
                if _commit(store, worker, rid, amount).applied:
                    applied += amount
                    commits += 1
                if choice > 0.85:
                    assert not _commit(store, worker, rid, amount).applied
            rounds.wait(timeout=60)  # the round is settled before the next one reserves
        edge = []
        jitter = random.Random(-worker)
        for n in range(EDGE_ROUNDS):
            rid = f"edge-w{worker}-{n}"
            checks = [Check(scope="edge", metric="nanos", amount=EDGE_AMOUNT, limit=EDGE_LIMIT)]
            time.sleep(jitter.random() * 0.0005)  # the workers' checks fall at moments spread apart
            now = int(time.time() * 1000)
            outcome = store.reserve(
                ReserveRequest(day=DAY, request_id=rid, checks=checks, now_ms=now, lease_ms=600_000)
            )
            edge.append(outcome.ok)
            rounds.wait(timeout=60)  # every grant of the round is held at once
            if outcome.ok:
                store.release(DAY, rid, int(time.time() * 1000))
            rounds.wait(timeout=60)
        results.put((worker, applied, commits, refusals, 0, 0.0, granted, released, tuple(edge)))
    except BaseException:
        results.put((worker, "error", traceback.format_exc()))
        raise
    finally:
        store.close()


def run_workers(
    url: str,
    workers: int,
    calls: int,
    limit: int | None,
    *,
    pause: float = 0.0,
    while_running: Callable[[], None],
    in_rounds: bool = False,
) -> list[tuple[Any, ...]]:
    """Start ``workers`` spawned processes together, run ``while_running`` meanwhile, collect
    reports (``in_rounds``: :func:`_budget_worker`, else :func:`_worker`)."""
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    if in_rounds:
        target: Callable[..., None] = _budget_worker
        args: tuple[Any, ...] = (calls, limit, start, results, ctx.Barrier(workers))
    else:
        target, args = _worker, (calls, limit, pause, start, results)
    procs = [ctx.Process(target=target, args=(url, w, *args), daemon=True) for w in range(workers)]
    try:
        for p in procs:
            p.start()
        start.set()
        while_running()
        reports = [results.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=10)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        results.close()
        results.join_thread()
    errors = [r[2] for r in reports if r[1] == "error"]
    assert not errors, errors[0]
    assert [p.exitcode for p in procs] == [0] * workers
    print(
        "reports (worker, applied, commits, refusals, failures, slowest failure):", *sorted(reports), sep="\n"
    )
    return sorted(reports)


def check_totals(store: RedisStore, reports: list[tuple[Any, ...]]) -> None:
    """The store's totals are exactly what the workers say they applied, and nothing is held."""
    now = int(time.time() * 1000)
    scopes = [("g", "nanos"), *((f"u/{r[0]}", "nanos") for r in reports)]
    totals = store.totals(DAY, scopes, now)  # type: ignore[arg-type]
    assert totals[("g", "nanos")] == (sum(r[1] for r in reports), 0)
    for worker, applied, *_ in reports:
        assert totals[(f"u/{worker}", "nanos")] == (applied, 0)
    rows = {row.rollup_key: row.values for row in store.rollup([DAY])}
    for worker, applied, commits, *_ in reports:
        assert rows.get(f"f/{worker}/m", {}).get("requests", 0) == commits
        assert rows.get(f"f/{worker}/m", {}).get("cost_nanos", 0) == applied


def test_eight_processes_share_one_budget(clean_redis_url: str) -> None:
    limit = 40_100  # runs out about half-way through 2,000 calls of ~100 nano-USD (and so near
    # the edge that a check missing the round's other holds overspends it: 40,452 granted - released)
    store = RedisStore(clean_redis_url)
    peaks: list[int] = []

    def watch() -> None:  # the limit holds at every moment, reservations included
        for _ in range(200):
            spent, reserved = store.totals(DAY, [("g", "nanos")], int(time.time() * 1000))[("g", "nanos")]
            peaks.append(spent + reserved)
            time.sleep(0.01)

    try:
        reports = run_workers(clean_redis_url, 8, 250, limit, while_running=watch, in_rounds=True)
        check_totals(store, reports)
        # What the store let the workers hold at once, and so spend: within the limit, exactly.
        assert sum(r[6] for r in reports) - sum(r[7] for r in reports) <= limit
        spent, _ = store.totals(DAY, [("g", "nanos")], int(time.time() * 1000))[("g", "nanos")]
        assert spent <= limit
        assert max(peaks) <= limit
        # At the edge: in every round one worker's reservation was granted, never two at once.
        assert [sum(r[8][n] for r in reports) for n in range(EDGE_ROUNDS)] == [1] * EDGE_ROUNDS
        assert sum(r[3] for r in reports) > 0  # the budget ran out: some calls were refused
        assert sum(r[2] for r in reports) > 100  # and many went through before it did
    finally:
        store.close()


def test_redis_killed_and_restarted_mid_run(redis_server_binary: str) -> None:
    server = RedisServer(redis_server_binary, persistent=True).start()
    store = RedisStore(server.url, socket_timeout=1.0)
    down_for: list[float] = []

    def outage() -> None:
        deadline = time.monotonic() + 20
        while store.totals(DAY, [("g", "nanos")], 0)[("g", "nanos")][0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # wait until the workers are charging
        time.sleep(0.3)
        server.halt(kill=True)
        started = time.monotonic()
        with pytest.raises(BudgetUnavailableError):
            store.reserve(ReserveRequest(day=DAY, request_id="probe", checks=[], now_ms=0, lease_ms=1))
        down_for.append(time.monotonic() - started)
        time.sleep(1.0)
        server.resume()

    try:
        reports = run_workers(server.url, 4, 150, 10_000_000, pause=0.01, while_running=outage)
        check_totals(store, reports)
        assert sum(r[4] for r in reports) > 0  # the workers did see the outage
        assert max(r[5] for r in reports) < 1.0 + 1.5  # no failing call waited much past socket_timeout
        assert down_for[0] < 1.0 + 1.5
    finally:
        store.close()
        server.stop()
