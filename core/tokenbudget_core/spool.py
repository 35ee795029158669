"""A local disk spool for usage the store could not take (fail-open, or a store lost mid-call).

Each commit that fails to reach the store is appended as one JSON line (and fsynced).
:meth:`Spool.replay` commits the lines again; commits are idempotent per request id, so a
line replayed twice (a crash mid-replay) is still counted once. Lines that fail again stay.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict
from pathlib import Path

from .errors import BudgetUnavailableError
from .stores.base import Check, CommitRequest, LedgerStore

__all__ = ["Spool"]


class Spool:
    """An append-only JSON-lines file of pending commits."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        try:
            with self.path.open() as f:
                return sum(1 for line in f if line.strip())
        except FileNotFoundError:
            return 0

    def pending(self) -> bool:
        """True when the spool holds commits (a cheap stat)."""
        try:
            return self.path.stat().st_size > 0
        except FileNotFoundError:
            return False

    def append(self, req: CommitRequest) -> None:
        """Write one commit durably."""
        line = json.dumps(asdict(req), separators=(",", ":")) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())

    def replay(self, store: LedgerStore) -> int:
        """Commit every spooled line to ``store``; returns how many were applied now."""
        with self._lock:
            try:
                lines = [line for line in self.path.read_text().splitlines() if line.strip()]
            except FileNotFoundError:
                return 0
            applied = 0
            left: list[str] = []
            for i, line in enumerate(lines):
                data = json.loads(line)
                data["charges"] = [Check(**c) for c in data["charges"]]
                try:
                    if store.commit(CommitRequest(**data)).applied:
                        applied += 1
                except BudgetUnavailableError:
                    left = lines[i:]
                    break
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(f"{line}\n" for line in left))
            os.replace(tmp, self.path)
            return applied
