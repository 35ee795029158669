"""A process forked while another thread is inside a store call: the child's calls never block.

The other thread is held inside the call on purpose (a scope whose hash waits, a database
another connection keeps locked), so the fork happens mid-call every time; it is let go a
moment later, as a real call would finish. Before the fix the child inherited the store's lock
held (and SQLite's record of the transaction in flight) and hung on its first call.
"""

from __future__ import annotations

import gc
import os
import sqlite3
import threading
import time
import weakref
from contextlib import closing
from pathlib import Path

import pytest

from fork_support import call_in_thread, fork_while_spending, run_in_fork
from store_contract import commit, reserve, totals
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.stores.memory import MemoryStore
from tokenbudget_core.stores.sqlite import SQLiteStore

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")


class _HeldScope(str):
    """A scope whose hash (taken under the store's lock) waits for ``gate``."""

    entered = threading.Event()
    gate = threading.Event()

    def __hash__(self) -> int:
        if not type(self).gate.is_set():
            type(self).entered.set()
            type(self).gate.wait(10)
        return str.__hash__(self)


def _let_go_after(event: threading.Event, seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, event.set)
    timer.start()
    return timer


def test_memory_store_forked_mid_call_serves_the_child() -> None:
    store = MemoryStore()
    assert reserve(store, "before", 10, None).ok
    _HeldScope.entered.clear()
    _HeldScope.gate.clear()
    thread, out = call_in_thread(lambda: reserve(store, "mid-fork", 5, None, scope=_HeldScope("user/f/v")))
    assert _HeldScope.entered.wait(5)  # the other thread is inside reserve, holding the lock
    timer = _let_go_after(_HeldScope.gate, 0.3)  # and finishes a moment later

    def child() -> None:
        assert reserve(store, "child", 7, None).ok
        assert commit(store, "child", 7).applied
        # The fork waited for the lock section in flight: the copy holds all of the reservation
        # or none of it, never half. (A reserve looks its balance cells up under the lock, then
        # reserves under it again: the fork may come between the two, before the reservation.)
        held = (totals(store, "global"), totals(store, "user/f/v"))
        assert held in (((7, 15), (0, 5)), ((7, 10), (0, 0))), held

    assert run_in_fork(child) == 0
    thread.join(5)
    timer.join()
    assert out
    assert out[0].ok  # type: ignore[union-attr]
    assert totals(store, "global") == (0, 15)  # the child's calls stayed in the child


def test_sqlite_store_forked_mid_call_gets_its_own_lock_and_connection(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    url = f"sqlite:///{path}"
    with closing(SQLiteStore(url)) as store:
        assert reserve(store, "before", 10, None).ok
        blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN IMMEDIATE")  # another process's writer: reserve below waits for it
        thread, out = call_in_thread(lambda: reserve(store, "mid-fork", 5, None))
        deadline = time.monotonic() + 5
        while not store._lock.locked() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert store._lock.locked()  # the other thread is inside reserve, waiting for the file lock
        gate = threading.Event()
        timer = _let_go_after(gate, 0.3)
        releaser = threading.Thread(target=lambda: (gate.wait(), blocker.execute("ROLLBACK")))
        releaser.start()

        def child() -> None:
            assert reserve(store, "child", 7, None).ok
            assert commit(store, "child", 7).applied
            store.close()

        assert run_in_fork(child) == 0
        thread.join(10)
        releaser.join()
        timer.join()
        blocker.close()
        assert out
        assert out[0].ok  # type: ignore[union-attr]
        # One file: the parent reads what the child wrote on its own connection.
        assert totals(store, "global") == (7, 15)


def test_sqlite_ledger_forked_while_threads_are_busy(tmp_path: Path) -> None:
    """The reviewer's case: worker threads spending through one ledger while the process forks
    (the first fork comes while one of them makes the first price lookup, importing genai-prices)."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}", alerts=[])
    try:
        fork_while_spending(ledger, threads=3)
    finally:
        ledger.close()


def test_stores_registered_for_forks_can_still_be_collected(tmp_path: Path) -> None:
    memory = MemoryStore()
    sqlite = SQLiteStore(f"sqlite:///{tmp_path / 'g.db'}")
    sqlite.close()
    refs = [weakref.ref(memory), weakref.ref(sqlite)]
    del memory, sqlite
    gc.collect()
    assert [r() for r in refs] == [None, None]


_FORK_DURING_FIRST_PRICE_LOOKUP = """
import os, sys, threading, time
from tokenbudget_core.ledger import Ledger
ledger = Ledger("memory://")
assert "genai_prices.data" not in sys.modules  # the first price lookup imports it (~0.4 s)
lookup = threading.Thread(
    target=lambda: ledger.reserve(model="gpt-4o", input_tokens=10, max_output_tokens=10)
)
lookup.start()
while "genai_prices" not in sys.modules:
    time.sleep(0.001)
pid = os.fork()
if pid == 0:
    import signal
    signal.alarm(20)  # a hang ends the child with SIGALRM, not the test run
    Ledger("memory://").reserve(model="gpt-4o", input_tokens=10, max_output_tokens=10)
    os._exit(0)
_, status = os.waitpid(pid, 0)
lookup.join()
sys.exit(0 if status == 0 else 3)
"""


def test_a_fork_during_another_threads_first_price_lookup_never_hangs_the_child() -> None:
    """The first price lookup imports genai-prices' data in whatever thread makes it; a fork made
    meanwhile waits for that import, else the child would wait forever on its half-done import."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _FORK_DURING_FIRST_PRICE_LOOKUP], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
