"""A SQLite file another process keeps write-locked (a long purge, a batch job, a stuck worker),
for tests of what the store and the ledger do while it is."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_HOLDER = """
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("BEGIN IMMEDIATE")
print("held", flush=True)
time.sleep(60)
"""


@contextmanager
def write_locked(path: Path) -> Iterator[subprocess.Popen[str]]:
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
