"""A SQLite file already at the current schema opens while another process holds a write
transaction (a long purge, a batch job, a stuck worker), so a fail-open ledger comes up; only
a migration takes the write lock. The lock is held by a real second process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from store_contract import reserve
from tokenbudget_core.errors import BudgetUnavailableError
from tokenbudget_core.stores.sqlite import SQLiteStore

TIMEOUT_S = 1.0

_HOLDER = """
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("BEGIN IMMEDIATE")
print("held", flush=True)
time.sleep(60)
"""


@contextmanager
def _write_locked(path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding ``BEGIN IMMEDIATE`` on ``path`` until the block ends."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    db = tmp_path / "ledger.db"
    with closing(SQLiteStore(f"sqlite:///{db}")) as store:  # an existing, migrated ledger
        assert reserve(store, "before", 10, None).ok
    return db


def test_a_migrated_file_opens_while_another_process_writes(path: Path) -> None:
    # Opening needs no write lock; a write still waits for the other process.
    with _write_locked(path):
        store = SQLiteStore(f"sqlite:///{path}", timeout_s=TIMEOUT_S)
        try:
            with pytest.raises(BudgetUnavailableError):
                reserve(store, "r", 5, None)
        finally:
            store.close()
    with closing(SQLiteStore(f"sqlite:///{path}", timeout_s=TIMEOUT_S)) as store:
        assert reserve(store, "r", 5, None).ok
