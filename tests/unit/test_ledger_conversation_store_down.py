"""A commit naming a conversation, on a SQLite file another process keeps write-locked: the
commit meets the outage once and is spooled; the replay still counts the conversation once.

On SQLite the commit sets the conversation's once-mark itself, so the outage is met by the one
commit. A store that cannot (``commits_conversation_marks`` False, as a store of one's own may
be) is asked the mark first: the mark meets the outage, and the commit is spooled at once instead
of waiting out the store's timeout a second time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sqlite_lock import write_locked
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report
from tokenbudget_core.stores.sqlite import SQLiteStore
from tokenbudget_core.usage import Usage


class CountingStore(SQLiteStore):
    """The real SQLite store, counting the operations the ledger sends it (``atomic``: it sets a
    commit's conversation mark in the commit, as SQLite does; else it is asked apart first)."""

    def __init__(self, url: str, atomic: bool, **options: Any) -> None:
        super().__init__(url, **options)
        self.commits_conversation_marks = atomic
        self.marks = 0
        self.commits = 0

    def mark_once(self, key: str, ttl_s: int) -> bool:
        self.marks += 1
        return super().mark_once(key, ttl_s)

    def commit(self, req: Any) -> Any:
        self.commits += 1
        return super().commit(req)


@pytest.mark.parametrize("atomic", [True, False], ids=["mark-in-commit", "mark-apart"])
def test_a_conversation_commit_meets_the_outage_once_and_is_counted_at_replay(
    tmp_path: Path, atomic: bool
) -> None:
    path = tmp_path / "ledger.db"
    store = CountingStore(f"sqlite:///{path}", atomic, timeout_s=0.2)
    ledger = Ledger(store, spool_path=tmp_path / "spool.jsonl")
    held = ledger.reserve(model="gpt-4o-mini", input_tokens=10, max_output_tokens=10, conversation="c-1")
    with write_locked(path):
        charge = ledger.commit(held, Usage(input_tokens=10, output_tokens=5))
    assert charge.spooled
    assert (store.marks, store.commits) == ((0, 1) if atomic else (1, 0))
    assert ledger.replay_spool() == 1
    totals = build_report(ledger, day=held.day).totals
    assert (totals.requests, totals.conversations, totals.output_tokens) == (1, 1, 5)
    ledger.close()


@pytest.mark.parametrize("atomic", [True, False], ids=["mark-in-commit", "mark-apart"])
def test_a_batch_of_conversation_commits_meets_the_outage_once(tmp_path: Path, atomic: bool) -> None:
    path = tmp_path / "ledger.db"
    store = CountingStore(f"sqlite:///{path}", atomic, timeout_s=0.2)
    ledger = Ledger(store, spool_path=tmp_path / "spool.jsonl")
    held = [
        ledger.reserve(model="gpt-4o-mini", input_tokens=10, max_output_tokens=10, conversation=f"c-{i}")
        for i in range(5)
    ]
    with write_locked(path):
        charges = ledger.commit_many([(r, Usage(input_tokens=10, output_tokens=5)) for r in held])
    assert all(c.spooled for c in charges)  # type: ignore[union-attr]
    assert (store.marks, store.commits) == ((0, 1) if atomic else (1, 0))  # one wait for the whole batch
    assert ledger.replay_spool() == 5
    totals = build_report(ledger, day=held[0].day).totals
    assert (totals.requests, totals.conversations) == (5, 5)
    ledger.close()
