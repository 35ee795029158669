"""The SQLite file deleted or replaced under a running process (review s21, finding 3).

Before the fix the store kept writing into the unlinked file: its commits returned
``applied=True`` and vanished, and a new process on the same path saw none of them (the budget
split in two). Now the store notices that the path names another file, opens it (with a
WARNING), and a write that went to the old file is reported unavailable (the ledger spools it
and replays it into the new file): nothing that returned applied is lost.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from store_contract import commit, reserve, totals
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.errors import BudgetUnavailableError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.stores.base import CommitOutcome, LedgerStore
from tokenbudget_core.stores.sqlite import SQLiteStore
from tokenbudget_core.usage import Usage


def _delete(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _commit_retried(store: LedgerStore, rid: str, amount: int) -> CommitOutcome:
    """A commit, retried once if the store says its write went to the old file (as asked)."""
    try:
        return commit(store, rid, amount)
    except BudgetUnavailableError:
        return commit(store, rid, amount)


def test_a_store_whose_file_is_deleted_writes_to_the_new_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "ledger.db"
    url = f"sqlite:///{path}"
    with closing(SQLiteStore(url)) as old:
        assert commit(old, "before", 50).applied
        _delete(path)  # a cleanup job
        with closing(SQLiteStore(url)) as new:  # another process starts on the path
            assert commit(new, "other", 300).applied
            with caplog.at_level(logging.WARNING, logger="tokenbudget.store.sqlite"):
                assert _commit_retried(old, "after", 100).applied
            assert "deleted or replaced" in caplog.text
            assert totals(new) == (400, 0)  # the old process's commit is in the file the path names
            assert reserve(old, "held", 20, 1_000).ok  # and so are its later calls
            assert commit(old, "later", 7).applied
            assert totals(new) == (407, 20)
    with closing(SQLiteStore(url)) as fresh:  # nothing of the new file's was lost on the way
        assert totals(fresh) == (407, 20)


def test_a_store_whose_file_is_replaced_reads_the_new_file(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    url = f"sqlite:///{path}"
    with closing(SQLiteStore(url)) as old:
        assert commit(old, "before", 50).applied
        other = tmp_path / "other.db"
        with closing(SQLiteStore(f"sqlite:///{other}")) as replacement:
            assert commit(replacement, "restored", 900).applied
        _delete(path)  # a redeploy puts another ledger (its WAL checkpointed) in its place
        os.replace(other, path)
        time.sleep(1.1)  # a call writing nothing checks the path once a second
        assert totals(old) == (900, 0)


_OTHER_PROCESS = """
import sys
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.usage import Usage
lg = Ledger(sys.argv[1], policy=BudgetPolicy(user_daily_tokens=1000), spool_path=sys.argv[2], alerts=[])
r = lg.reserve(model="gpt-4o", input_tokens=100, max_output_tokens=200, user="alice")
assert lg.commit(r, Usage(input_tokens=100, output_tokens=200)).applied
"""


def test_a_ledger_whose_file_is_deleted_loses_no_commit(tmp_path: Path) -> None:
    """The reviewer's case: a long-lived worker's ledger, the file deleted, another process writes
    to the new file; the worker's commits count in the new file, and in the budget."""
    path = tmp_path / "x.db"
    url = f"sqlite:///{path}"
    ledger = Ledger(
        url,
        policy=BudgetPolicy(user_daily_tokens=1000),
        spool_path=tmp_path / "spool.jsonl",
        on_unavailable="open",
        alerts=[],
    )
    try:

        def call() -> bool:
            r = ledger.reserve(model="gpt-4o", input_tokens=100, max_output_tokens=200, user="alice")
            return ledger.commit(r, Usage(input_tokens=100, output_tokens=200)).applied

        assert call()
        _delete(path)
        done = subprocess.run(
            [sys.executable, "-c", _OTHER_PROCESS, url, str(tmp_path / "spool2.jsonl")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        call()  # applied, or spooled when its write went to the old file
        ledger.replay_spool()
        assert not ledger.spool.pending()
        assert ledger.state(user="alice").used == {
            "user_daily_tokens (all features)": 600
        }  # the other process's 300 and this one's
    finally:
        ledger.close()
    fresh = Ledger(
        url, policy=BudgetPolicy(user_daily_tokens=1000), spool_path=tmp_path / "s3.jsonl", alerts=[]
    )
    try:
        assert fresh.state(user="alice").used == {
            "user_daily_tokens (all features)": 600
        }  # in the file, after the worker is gone
    finally:
        fresh.close()
