"""A relative spool path is resolved once, when the spool is made: usage spooled before a
``chdir`` (a daemon, a worker's ``--workdir``, a notebook's ``%cd``) is still replayed after it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenbudget_core.spool import Spool
from tokenbudget_core.stores.base import Check, CommitRequest
from tokenbudget_core.stores.memory import MemoryStore

DAY = "2026-11-23"


def _req(rid: str) -> CommitRequest:
    return CommitRequest(
        day=DAY,
        request_id=rid,
        charges=[Check(scope="g", metric="nanos", amount=100)],
        rollup_key="//gpt-4o",
        rollup={"requests": 1, "cost_nanos": 100},
        now_ms=0,
    )


def test_spooled_usage_is_replayed_after_a_chdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    monkeypatch.chdir(first)
    spool = Spool("spool.jsonl")
    spool.append(_req("r1"))
    monkeypatch.chdir(second)
    spool.append(_req("r2"))  # the same file, not a second one in the new directory

    assert spool.path == first / "spool.jsonl"
    assert len(spool) == 2
    store = MemoryStore()
    assert spool.replay(store) == 2
    assert store.totals(DAY, [("g", "nanos")], now_ms=0) == {("g", "nanos"): (200, 0)}
    assert not (second / "spool.jsonl").exists()
