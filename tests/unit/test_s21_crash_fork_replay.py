"""A process forked while another of its threads replays the spool (review s21, finding 5).

The thread holds the ledger's replay lock, the spool's lock and the spool's ``flock`` for the
whole replay. It is held inside the replay on purpose (its first commit waits for a database
another connection keeps locked), so the fork happens mid-replay every time. Before the fix the
child inherited those locks held by a thread that does not exist in it: its ``replay_spool()``
hung for ever and its spooled usage was never replayed by it.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest

from fork_support import call_in_thread, run_in_fork
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.stores.base import Check, CommitRequest
from tokenbudget_core.stores.sqlite import SQLiteStore

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")

SPOOLED = 20


def _spooled(day: str, request_id: str) -> CommitRequest:
    return CommitRequest(
        day=day,
        request_id=request_id,
        charges=(Check(scope="g", metric="tokens", amount=1),),
        rollup_key="f/u/m",
        rollup={"requests": 1},
        now_ms=int(time.time() * 1000),
    )


def _used(store: SQLiteStore, day: str) -> int:
    return store.totals(day, [("g", "tokens")], now_ms=int(time.time() * 1000))[("g", "tokens")][0]


def test_a_child_forked_mid_replay_replays_its_own_spool(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with closing(SQLiteStore(f"sqlite:///{path}", timeout_s=10)) as store:
        ledger = Ledger(store, spool_path=tmp_path / "spool.jsonl", on_unavailable="open", alerts=[])
        day = ledger.day()
        for i in range(SPOOLED):  # an outage's spool
            ledger.spool.append(_spooled(day, f"old-{i}"))
        blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN IMMEDIATE")  # another process's writer: the replay's commit waits
        thread, out = call_in_thread(ledger.replay_spool)
        deadline = time.monotonic() + 5
        while not store._lock.locked() and time.monotonic() < deadline:
            time.sleep(0.01)
        # The thread is inside the replay, in its first commit, waiting for the file's lock.
        assert store._lock.locked()
        assert ledger._replay_lock.locked()
        assert ledger.spool._lock.locked()
        timer = threading.Timer(0.3, lambda: blocker.execute("ROLLBACK"))  # a moment later it goes on
        timer.start()

        def child() -> None:
            ledger.spool.append(_spooled(day, "child-spooled"))  # the child's own (a blip)
            ledger.replay_spool()  # waits for the parent's replay under way, then replays the rest
            assert not ledger.spool.pending()
            assert _used(store, day) == SPOOLED + 1  # the child's line counted, every line once

        try:
            assert run_in_fork(child, timeout_s=20) == 0
        finally:
            thread.join(20)
            timer.join()
            blocker.close()
        assert out == [SPOOLED]
        assert _used(store, day) == SPOOLED + 1
        ledger.close()
