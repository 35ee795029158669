"""A batch of commits the store cannot take (``commit_many`` during an outage) is spooled in one
write with one fsync, not one a line (a batch of thousands waited seconds for the disk); every
line is kept and replayed exactly once the store is back, and a spool that cannot be written
fails each item with the error naming its request. Against a real Redis taking no writes for a
moment (``NOREPLICAS``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from tokenbudget_core import Usage
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.errors import BudgetUnavailableError
from tokenbudget_core.ledger import Ledger

pytestmark = pytest.mark.integration

N = 300


def _counting_fsync(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the process's fsyncs (each still made)."""
    calls: list[int] = []
    real: Callable[[int], None] = os.fsync

    def fsync(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def _ledger(url: str, spool: Path) -> Ledger:
    return Ledger(
        url, policy=BudgetPolicy(user_daily_tokens=10**9), on_unavailable="open", spool_path=spool, alerts=[]
    )


def _reserve_all(ledger: Ledger) -> list[Any]:
    return [
        ledger.reserve(model="gpt-4o", input_tokens=10, max_output_tokens=10, user=f"u{i % 7}", feature="f")
        for i in range(N)
    ]


def test_commit_many_during_an_outage_spools_the_batch_with_one_fsync(
    clean_redis_url: str, redis_client: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = tmp_path / "s.jsonl"
    ledger = _ledger(clean_redis_url, spool)
    held = _reserve_all(ledger)
    redis_client.config_set("min-replicas-to-write", 1)  # no writes for a moment
    try:
        fsyncs = _counting_fsync(monkeypatch)
        charges = ledger.commit_many([(r, Usage(input_tokens=10, output_tokens=1)) for r in held])
        monkeypatch.undo()
    finally:
        redis_client.config_set("min-replicas-to-write", 0)
    assert all(not isinstance(c, Exception) and c.spooled for c in charges)
    assert len(fsyncs) == 1
    assert len(ledger.spool) == N
    assert ledger.replay_spool() == N
    assert len(ledger.spool) == 0
    for u in range(7):
        calls = len(range(u, N, 7))
        totals = ledger.store.totals(ledger.day(), [(f"u/f/u{u}", "tokens")], ledger._now_ms())
        assert totals == {(f"u/f/u{u}", "tokens"): (11 * calls, 0)}


def test_a_batch_the_spool_cannot_take_fails_each_item_naming_its_request(
    clean_redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    folder = tmp_path / "spool"
    ledger = _ledger(clean_redis_url, folder / "s.jsonl")
    held = _reserve_all(ledger)[:5]
    if folder.exists():  # (made by nothing so far)
        folder.rmdir()
    folder.write_text("a file where the spool's folder was")
    redis_client.config_set("min-replicas-to-write", 1)
    try:
        results = ledger.commit_many([(r, Usage(input_tokens=10, output_tokens=1)) for r in held])
    finally:
        redis_client.config_set("min-replicas-to-write", 0)
    for reservation, result in zip(held, results, strict=True):
        assert isinstance(result, BudgetUnavailableError)
        assert f"the usage of request {reservation.request_id!r} is not recorded" in str(result)
