"""SQLite's request rows: a settled request keeps no copy of its checks, and settled request ids
are purged after ``request_retention_days`` (default 7, like Redis), in short transactions,
while the day's balances stay for ``retention_days``. A commit replayed within the request
retention still counts once."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.stores import open_store
from tokenbudget_core.stores.base import Check, CommitRequest, ReserveRequest
from tokenbudget_core.stores.sqlite import SQLiteStore


def _day(days_ago: int) -> str:
    return (datetime.now(UTC).date() - timedelta(days=days_ago)).isoformat()


def _reserve(store: SQLiteStore, day: str, rid: str, *, now_ms: int = 1_000, lease_ms: int = 60_000) -> None:
    checks = [Check(scope="user/f/u", metric="tokens", amount=5, limit=None)]
    req = ReserveRequest(day=day, request_id=rid, checks=checks, now_ms=now_ms, lease_ms=lease_ms)
    assert store.reserve(req).ok


def _commit(store: SQLiteStore, day: str, rid: str) -> bool:
    req = CommitRequest(
        day=day,
        request_id=rid,
        charges=[Check(scope="user/f/u", metric="tokens", amount=3)],
        rollup_key="f/u/gpt-4o",
        rollup={"requests": 1},
        now_ms=2_000,
    )
    return store.commit(req).applied


def _rows(path: Path) -> list[tuple[str, str, str, str]]:
    with closing(sqlite3.connect(path)) as db:
        return list(
            db.execute("SELECT day, request_id, state, checks_json FROM requests ORDER BY day, request_id")
        )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


def test_a_settled_request_keeps_no_checks(path: Path) -> None:
    day = "2026-11-23"
    with closing(SQLiteStore(f"sqlite:///{path}", retention_days=None)) as store:
        for rid in ("committed", "released", "expired", "live"):
            _reserve(store, day, rid, lease_ms=500 if rid == "expired" else 60_000)
        assert _commit(store, day, "committed")
        assert store.release(day, "released", now_ms=1_000)
        assert store.totals(day, [("user/f/u", "tokens")], now_ms=2_000) == {("user/f/u", "tokens"): (3, 5)}
    assert _rows(path) == [
        (day, "committed", "committed", "[]"),
        (day, "expired", "expired", "[]"),
        (day, "live", "reserved", '[["user/f/u", "tokens", 5]]'),  # still needed to release it
        (day, "released", "released", "[]"),
    ]


def test_settled_request_ids_are_purged_after_the_request_retention(path: Path) -> None:
    with closing(SQLiteStore(f"sqlite:///{path}")) as store:  # retention 400 days, requests 7
        old, recent = _day(10), _day(3)
        for i in range(4_500):  # more than one purge transaction's worth
            assert _commit(store, old, f"old-{i}")
        _reserve(store, old, "old-live", now_ms=10**15)  # still holds a lease: kept
        assert _commit(store, recent, "recent")
        _reserve(store, _day(0), "today")  # the first call of a newer day purges

        assert [r[1] for r in _rows(path)] == ["old-live", "recent", "today"]
        # The day's figures stay for retention_days.
        spent = store.totals(old, [("user/f/u", "tokens")], now_ms=2_000)[("user/f/u", "tokens")][0]
        assert spent == 3 * 4_500
        assert len(store.rollup([old])) == 1
        # Within the request retention a replayed commit still counts once.
        assert not _commit(store, recent, "recent")


def test_request_retention_days_is_checked_and_is_an_option_of_open_store(path: Path) -> None:
    for bad in (0, -1, True, 1.5, 500):
        with pytest.raises(InvalidInputError) as e:
            SQLiteStore(f"sqlite:///{path}", request_retention_days=bad)  # type: ignore[arg-type]
        assert e.value.field == "request_retention_days"
    store = open_store(f"sqlite:///{path}", retention_days=30, request_retention_days=30)
    store.close()
