"""SQLiteStore's options are checked when the store is built, like RedisStore's.

A negative ``retention_days`` used to purge *today* at each process's first write (every budget
back to $0 on restart, request ids forgotten so a replayed commit was charged again); a string
from a config file crashed the first reserve with a bare TypeError, as did ``timeout_s="x"``.
"""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

import pytest

from store_contract import commit, reserve, totals
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.stores import open_store
from tokenbudget_core.stores.base import Check, ReserveRequest
from tokenbudget_core.stores.sqlite import SQLiteStore


@pytest.mark.parametrize("days", [-1, 0, "30", 30.0, 1.5, True, [30]])
def test_a_retention_that_is_not_a_positive_int_is_refused(tmp_path: Path, days: object) -> None:
    with pytest.raises(InvalidInputError) as e:
        SQLiteStore(f"sqlite:///{tmp_path / 'l.db'}", retention_days=days)  # type: ignore[arg-type]
    assert e.value.field == "retention_days"
    assert "positive number of days" in str(e.value)
    assert e.value.fix
    assert not (tmp_path / "l.db").exists()  # refused before the file is created


@pytest.mark.parametrize("timeout", ["x", "30", 0, -1, float("nan"), float("inf"), 10**9, True, None])
def test_a_timeout_that_is_not_a_positive_number_is_refused(tmp_path: Path, timeout: object) -> None:
    with pytest.raises(InvalidInputError) as e:
        SQLiteStore(f"sqlite:///{tmp_path / 'l.db'}", timeout_s=timeout)  # type: ignore[arg-type]
    assert e.value.field == "timeout_s"
    assert "positive number of seconds" in str(e.value)


def test_open_store_checks_them_too(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as e:
        open_store(f"sqlite:///{tmp_path / 'l.db'}", retention_days=-1)
    assert e.value.field == "retention_days"


@pytest.mark.parametrize(("days", "timeout"), [(None, 30.0), (1, 0.05), (400, 5), (10**6, 2_147_483)])
def test_valid_options_are_taken(tmp_path: Path, days: int | None, timeout: float) -> None:
    with closing(SQLiteStore(f"sqlite:///{tmp_path / 'l.db'}", retention_days=days, timeout_s=timeout)) as s:
        assert reserve(s, "r1", 10, 100).ok
        assert commit(s, "r1", 7).applied
        assert totals(s) == (7, 0)
        assert not commit(s, "r1", 7).applied  # the request id is remembered


@pytest.mark.parametrize(
    "before_day", ["20261101", "today", "2026-11-23T00:00", None, 20261101, "2026-13-40"]
)
def test_purge_refuses_what_is_not_an_iso_day(tmp_path: Path, before_day: object) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path}/l.db")
    with pytest.raises(InvalidInputError) as e:
        store.purge(before_day)  # type: ignore[arg-type]
    assert e.value.field == "before_day"


def test_purge_never_deletes_a_day_some_time_zone_may_still_live(tmp_path: Path) -> None:
    """Yesterday (UTC) is still today at UTC-12: its balances and request ids stay, whatever
    cutoff is asked for."""
    from datetime import UTC, datetime, timedelta

    store = SQLiteStore(f"sqlite:///{tmp_path}/l.db", retention_days=None)
    today = datetime.now(UTC).date()
    days = [(today - timedelta(days=n)).isoformat() for n in (2, 1, 0)]
    check = Check(scope="u/f/a", metric="tokens", amount=10)
    for day in days:
        store.reserve(ReserveRequest(day=day, request_id="r", checks=(check,), now_ms=0, lease_ms=10**12))
    store.purge((today + timedelta(days=5)).isoformat())
    held = {day: store.totals(day, [("u/f/a", "tokens")], 0)[("u/f/a", "tokens")] for day in days}
    assert held == {days[0]: (0, 0), days[1]: (0, 10), days[2]: (0, 10)}


def test_a_sqlite_url_with_a_query_is_refused_not_a_new_empty_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as e:
        open_store(f"sqlite:///{tmp_path}/l.db?retention_days=30")
    assert e.value.field == "store"
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InvalidInputError) as e:
        open_store(f"sqlite:///{tmp_path}/l.db", retention=30)
    assert e.value.field == "retention"
