"""Releases waiting for an unreachable store are bounded: the oldest are dropped together with
their ids (logged), so a long outage cannot grow the ledger's memory without end."""

from __future__ import annotations

import collections
import logging
from pathlib import Path

import pytest

from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.errors import BudgetUnavailableError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.stores.base import ReserveOutcome, ReserveRequest
from tokenbudget_core.stores.sqlite import SQLiteStore

pytestmark = pytest.mark.usefixtures("isolated")


class _Down(SQLiteStore):
    """A SQLite store whose reserves fail while ``down``, noting the ids released."""

    down = False

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.released: list[str] = []

    def reserve(self, req: ReserveRequest) -> ReserveOutcome:
        if self.down:
            raise BudgetUnavailableError("sqlite://down", "a blip")
        return super().reserve(req)

    def release(self, day: str, request_id: str, now_ms: int, *, forget: bool = False) -> bool:
        self.released.append(request_id)
        return super().release(day, request_id, now_ms, forget=forget)


def test_waiting_releases_are_bounded_and_the_dropped_ones_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = _Down(f"sqlite:///{tmp_path / 'l.db'}")
    ledger = Ledger(store, policy=BudgetPolicy(user_daily_tokens=1_000), spool_path=tmp_path / "spool")
    ledger._orphans = collections.deque(maxlen=5)  # the bound, small for the test
    store.down = True
    for _ in range(12):
        with pytest.raises(BudgetUnavailableError):
            ledger.reserve(model="gpt-4o", input_tokens=1, max_output_tokens=0)
        assert len(ledger._orphan_ids) <= 5
    waiting = [rid for _, rid, _ in ledger._orphans]
    assert sorted(ledger._orphan_ids) == sorted(waiting)
    assert any("dropped" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    store.down = False
    ledger._next_spool_check = 0.0  # due for a look at once
    ledger.reserve(model="gpt-4o", input_tokens=1, max_output_tokens=0)
    assert store.released == waiting  # the latest five, released once the store answers
    assert not ledger._orphans
    assert not ledger._orphan_ids
    assert any("7 reservation releases were dropped" in r.getMessage() for r in caplog.records)
    ledger.close()
