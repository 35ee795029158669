"""``reserve_many`` / ``commit_many`` on a store without batch operations (SQLite) whose file
another process keeps write-locked: the batch meets the outage once, not once per item (each
item used to wait the store's whole ``timeout_s``: a batch of 100 at the default 30 s waited
50 minutes before failing open)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlite_lock import write_locked
from tokenbudget_core.errors import BudgetUnavailableError
from tokenbudget_core.ledger import Ledger, Reservation
from tokenbudget_core.reports import build_report
from tokenbudget_core.stores.sqlite import SQLiteStore
from tokenbudget_core.usage import Usage


class CountingStore(SQLiteStore):
    """The real SQLite store, counting the operations the ledger sends it."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.sent = 0
        self.released = 0

    def reserve(self, req: Any) -> Any:
        self.sent += 1
        return super().reserve(req)

    def commit(self, req: Any) -> Any:
        self.sent += 1
        return super().commit(req)

    def release(self, *args: Any, **kwargs: Any) -> Any:
        self.released += 1
        return super().release(*args, **kwargs)


CALLS = [
    {"model": "gpt-4o-mini", "input_tokens": 10, "max_output_tokens": 10, "user": f"u{i}"} for i in range(6)
]


def test_a_batch_fails_closed_after_one_attempt(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    store = CountingStore(f"sqlite:///{path}", timeout_s=0.2)
    ledger = Ledger(store, spool_path=tmp_path / "spool.jsonl")
    with write_locked(path):
        results = ledger.reserve_many(CALLS)
    assert store.sent == 1
    assert all(isinstance(r, BudgetUnavailableError) for r in results)
    assert len({id(r) for r in results}) == len(results)  # each call's own error, its traceback its own
    assert all(str(r) == str(results[0]) for r in results)
    ledger.close()


def test_a_batch_fails_open_after_one_attempt_and_every_commit_is_spooled(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    store = CountingStore(f"sqlite:///{path}", timeout_s=0.2)
    ledger = Ledger(store, on_unavailable="open", spool_path=tmp_path / "spool.jsonl")
    with write_locked(path):
        held = ledger.reserve_many(CALLS)
        assert store.sent == 1
        assert all(isinstance(r, Reservation) and r.unchecked for r in held)
        charges = ledger.commit_many([(r, Usage(input_tokens=10, output_tokens=5)) for r in held])  # type: ignore[misc]
        assert store.sent == 2
        assert all(c.spooled for c in charges)  # type: ignore[union-attr]
    assert ledger.replay_spool() == len(CALLS)  # nothing lost once the lock is gone
    totals = build_report(ledger, day=ledger.day()).totals
    assert totals.requests == len(CALLS)
    assert totals.input_tokens == 10 * len(CALLS)
    ledger.close()


def test_only_the_item_that_may_have_run_is_released_once_the_store_answers(tmp_path: Path) -> None:
    """The batch's items never sent hold nothing: releasing them later would only crowd out
    releases that matter (their queue is bounded) and cost a round trip each."""
    path = tmp_path / "ledger.db"
    store = CountingStore(f"sqlite:///{path}", timeout_s=0.2)
    ledger = Ledger(store, spool_path=tmp_path / "spool.jsonl")
    with write_locked(path):
        ledger.reserve_many(CALLS)
    ledger.reserve(model="gpt-4o-mini", input_tokens=1, max_output_tokens=1)  # the store answers
    assert store.released == 1
    ledger.close()
