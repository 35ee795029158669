"""A SQLite file already at the current schema opens while another process holds a write
transaction (a long purge, a batch job, a stuck worker), so a fail-open ledger comes up; only
a migration takes the write lock. The lock is held by a real second process."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

import pytest

from sqlite_lock import write_locked
from store_contract import reserve
from tokenbudget_core.errors import BudgetUnavailableError
from tokenbudget_core.stores.sqlite import SQLiteStore

TIMEOUT_S = 1.0


@pytest.fixture
def path(tmp_path: Path) -> Path:
    db = tmp_path / "ledger.db"
    with closing(SQLiteStore(f"sqlite:///{db}")) as store:  # an existing, migrated ledger
        assert reserve(store, "before", 10, None).ok
    return db


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
