"""A SQLite file another process keeps write-locked (a long purge, a batch job, a stuck worker).

A file already at the current schema opens (only a migration takes the write lock), so a
fail-open ledger comes up. Every call fails within about its own ``timeout_s``, however many
threads of this process are queued on the store (the wait for the store's lock counts against
it); and a fork is not held by those threads for longer than ``timeout_s``, and its child gets a
connection of its own.

The lock is held by a real second process. The bounds on elapsed time are wide (3 x timeout_s,
where the failures measured 8 x timeout_s and more): they tell stacking apart, not speed.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import closing, suppress
from pathlib import Path

import pytest

from fork_support import run_in_fork
from sqlite_lock import write_locked
from store_contract import commit, reserve, totals
from tokenbudget_core.errors import BudgetUnavailableError
from tokenbudget_core.stores.sqlite import SQLiteStore

TIMEOUT_S = 1.0


@pytest.fixture
def path(tmp_path: Path) -> Path:
    db = tmp_path / "ledger.db"
    with closing(SQLiteStore(f"sqlite:///{db}")) as store:  # an existing, migrated ledger
        assert reserve(store, "before", 10, None).ok
    return db


def test_threads_queued_on_a_locked_file_each_fail_within_about_their_timeout(path: Path) -> None:
    threads = 8
    results: list[tuple[float, BaseException | None]] = []
    start = threading.Barrier(threads)

    def call(i: int) -> None:
        start.wait()
        t0 = time.monotonic()
        error: BaseException | None = None
        try:
            reserve(store, f"r{i}", 5, None)
        except BaseException as e:  # noqa: BLE001 - checked below
            error = e
        results.append((time.monotonic() - t0, error))

    with closing(SQLiteStore(f"sqlite:///{path}", timeout_s=TIMEOUT_S)) as store, write_locked(path):
        workers = [threading.Thread(target=call, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)

    assert len(results) == threads
    assert all(isinstance(error, BudgetUnavailableError) for _, error in results)
    # Before: the k-th thread in the queue failed after k x timeout_s (the last after 8 s).
    assert max(elapsed for elapsed, _ in results) < 3 * TIMEOUT_S


def test_a_fork_is_not_held_by_threads_calling_a_locked_file(path: Path, tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{path}", timeout_s=TIMEOUT_S)
    stop = threading.Event()
    give_up = time.monotonic() + 12  # the threads stop by themselves: before, the fork waited for this

    def busy() -> None:
        while not stop.is_set() and time.monotonic() < give_up:
            with suppress(BudgetUnavailableError):
                reserve(store, f"t{threading.get_ident()}-{time.monotonic_ns()}", 1, None)

    forked_after = tmp_path / "forked_after"
    try:
        with write_locked(path) as holder:
            workers = [threading.Thread(target=busy, daemon=True) for _ in range(6)]
            for worker in workers:
                worker.start()
            deadline = time.monotonic() + 5
            while not store._lock.locked() and time.monotonic() < deadline:
                time.sleep(0.01)
            t0 = time.monotonic()

            def child() -> None:
                forked_after.write_text(repr(time.monotonic() - t0))
                with pytest.raises(BudgetUnavailableError):  # still locked: fails, never hangs
                    reserve(store, "child-locked", 7, None)
                os.kill(holder.pid, signal.SIGKILL)  # the other process lets go
                assert reserve(store, "child", 7, None).ok
                assert commit(store, "child", 7).applied
                store.close()

            assert run_in_fork(child) == 0
            stop.set()
            for worker in workers:
                worker.join(30)
        # Before: the fork waited until the threads stopped (12 s here; 15.7 s in the report).
        assert float(forked_after.read_text()) < 3 * TIMEOUT_S
        spent, _ = totals(store, "global")
        assert spent == 7  # the child's commit, on its own connection, is in the file
    finally:
        stop.set()
        store.close()


def test_a_fork_waits_for_several_stalled_stores_at_once_not_one_after_another(
    path: Path, tmp_path: Path
) -> None:
    stores = [SQLiteStore(f"sqlite:///{path}", timeout_s=TIMEOUT_S) for _ in range(5)]
    stop = threading.Event()
    give_up = time.monotonic() + 12

    def busy(store: SQLiteStore) -> None:
        while not stop.is_set() and time.monotonic() < give_up:
            with suppress(BudgetUnavailableError):
                reserve(store, f"t{threading.get_ident()}-{time.monotonic_ns()}", 1, None)

    forked_after = tmp_path / "forked_after"
    try:
        with write_locked(path):
            workers = [
                threading.Thread(target=busy, args=(s,), daemon=True) for s in stores for _ in range(3)
            ]
            for worker in workers:
                worker.start()
            deadline = time.monotonic() + 5
            while not all(s._lock.locked() for s in stores) and time.monotonic() < deadline:
                time.sleep(0.01)
            t0 = time.monotonic()
            assert run_in_fork(lambda: forked_after.write_text(repr(time.monotonic() - t0))) == 0
            stop.set()
            for worker in workers:
                worker.join(30)
        # Each store's wait is bounded by its timeout_s, all from the same start: about 1 x
        # timeout_s for the five (one after another it was 5 x).
        assert float(forked_after.read_text()) < 3 * TIMEOUT_S
    finally:
        stop.set()
        for store in stores:
            store.close()


def test_a_fork_past_a_stalled_store_still_waits_for_a_busy_healthy_one(path: Path, tmp_path: Path) -> None:
    """The wait spent on a stalled store does not leave a busy healthy one unwaited for: a fork
    made inside the healthy store's write transaction would leave the child's copy of SQLite's
    in-process locks held for good (every call there 'database is locked')."""
    stalled = SQLiteStore(f"sqlite:///{path}", timeout_s=TIMEOUT_S)
    healthy = SQLiteStore(f"sqlite:///{tmp_path / 'healthy.db'}", timeout_s=TIMEOUT_S)
    stop = threading.Event()
    give_up = time.monotonic() + 30

    def busy(store: SQLiteStore, name: str) -> None:
        n = 0
        while not stop.is_set() and time.monotonic() < give_up:
            n += 1
            with suppress(BudgetUnavailableError):
                if reserve(store, f"{name}-{threading.get_ident()}-{n}", 1, None).ok:
                    commit(store, f"{name}-{threading.get_ident()}-{n}", 1)

    def child() -> None:
        stop.set()
        rid = f"child-{os.getpid()}"
        assert reserve(healthy, rid, 7, None).ok  # its own connection, no lock left held
        assert commit(healthy, rid, 7).applied

    try:
        with write_locked(path):
            workers = [threading.Thread(target=busy, args=(stalled, f"s{i}"), daemon=True) for i in range(3)]
            workers += [threading.Thread(target=busy, args=(healthy, f"h{i}"), daemon=True) for i in range(4)]
            for worker in workers:
                worker.start()
            time.sleep(0.3)
            codes = [run_in_fork(child, timeout_s=10) for _ in range(6)]
    finally:
        stop.set()
    assert codes == [0] * 6
    stalled.close()
    healthy.close()


def test_a_migrated_file_opens_while_another_process_writes(path: Path) -> None:
    # Opening needs no write lock; a write still waits for the other process.
    with write_locked(path):
        store = SQLiteStore(f"sqlite:///{path}", timeout_s=TIMEOUT_S)
        try:
            with pytest.raises(BudgetUnavailableError):
                reserve(store, "r", 5, None)
        finally:
            store.close()
    with closing(SQLiteStore(f"sqlite:///{path}", timeout_s=TIMEOUT_S)) as store:
        assert reserve(store, "r", 5, None).ok
