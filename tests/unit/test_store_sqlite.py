"""The embedded SQLite store honours the store contract, on a real file."""

from __future__ import annotations

import multiprocessing
import re
import sqlite3
import sys
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from store_contract import DAY, ContractTests, commit, reserve, totals
from tokenbudget_core.errors import BudgetUnavailableError, InvalidInputError, TokenBudgetError
from tokenbudget_core.stores import open_store
from tokenbudget_core.stores.base import Check, CommitRequest, LedgerStore, ReserveRequest
from tokenbudget_core.stores.sqlite import SCHEMA_VERSION, SQLiteStore


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger" / "tokenbudget.db"


@pytest.fixture
def url(db_path: Path) -> str:
    return f"sqlite:///{db_path}"  # an absolute path: four slashes


@pytest.fixture
def store(url: str) -> Iterator[SQLiteStore]:
    s = open_store(url)
    assert isinstance(s, SQLiteStore)
    yield s
    s.close()


class TestSQLiteStore(ContractTests):
    pass


class TestMemoryDatabase(ContractTests):
    @pytest.fixture
    def store(self) -> Iterator[LedgerStore]:
        s = SQLiteStore("sqlite:///:memory:")
        yield s
        s.close()


def test_wal_mode_and_schema_version_are_set_on_the_file(store: SQLiteStore, db_path: Path) -> None:
    assert isinstance(store, LedgerStore)
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    raw.close()
    assert tables == {"balances", "requests", "rollup", "marks", "call_costs"}
    conn = store._conn  # per-connection settings are only visible on the store's own connection
    assert conn is not None
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000


def test_relative_url_resolves_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with closing(SQLiteStore("sqlite:///data/rel.db")) as s:
        assert s.path == str(tmp_path / "data" / "rel.db")
    assert (tmp_path / "data" / "rel.db").is_file()


def test_two_stores_on_one_file_see_each_others_writes(store: SQLiteStore, url: str) -> None:
    with closing(SQLiteStore(url)) as other:
        assert reserve(store, "a", 600, 1_000).ok
        refused = reserve(other, "b", 500, 1_000)
        assert not refused.ok
        assert refused.used == 600
        assert commit(other, "a", 550).previous == "reserved"  # settles the first store's reservation
        assert totals(store) == (550, 0)
        assert not commit(store, "a", 550).applied


def test_reopening_the_file_keeps_everything(url: str) -> None:
    with closing(SQLiteStore(url)) as s:
        assert reserve(s, "r", 100, None).ok
        commit(s, "c", 40)
        s.record_call_cost(DAY, "f", 7)
        assert s.mark_once("alert", 3_600)
    with closing(SQLiteStore(url)) as s:
        assert totals(s) == (40, 100)
        assert reserve(s, "r", 100, None).duplicate
        assert not commit(s, "c", 40).applied
        assert s.call_costs(DAY, "f") == [7]
        assert not s.mark_once("alert", 3_600)
        assert [r.values["cost_nanos"] for r in s.rollup([DAY])] == [40]


def test_purge_deletes_only_days_before_the_cutoff(store: SQLiteStore) -> None:
    for day in ("2025-01-01", "2025-01-02", "2025-01-03"):
        store.commit(
            CommitRequest(
                day=day,
                request_id="r",
                charges=[Check(scope="global", metric="nanos", amount=5)],
                rollup_key="f/u/m",
                rollup={"requests": 1},
                now_ms=0,
            )
        )
        store.record_call_cost(day, "f", 5)
    assert store.mark_once("expired-mark", 0)
    # per day: 1 balance, 1 request, 1 rollup field, 1 call cost; plus the expired mark
    assert store.purge("2025-01-03") == 2 * 4 + 1
    assert [r.day for r in store.rollup(["2025-01-01", "2025-01-02", "2025-01-03"])] == ["2025-01-03"]
    assert store.totals("2025-01-02", [("global", "nanos")], 0) == {("global", "nanos"): (0, 0)}
    assert store.totals("2025-01-03", [("global", "nanos")], 0) == {("global", "nanos"): (5, 0)}
    assert store.call_costs("2025-01-01", "f") == []
    assert store.purge("2025-01-03") == 0


def test_retention_purges_old_days_when_a_new_day_starts(tmp_path: Path) -> None:
    with closing(SQLiteStore(f"sqlite:///{tmp_path / 'r.db'}", retention_days=2)) as s:

        def charge(day: str, rid: str) -> None:
            s.commit(
                CommitRequest(
                    day=day,
                    request_id=rid,
                    charges=[Check(scope="global", metric="tokens", amount=1)],
                    rollup_key="k",
                    rollup={"requests": 1},
                    now_ms=0,
                )
            )

        charge("2026-03-01", "a")
        charge("2026-03-02", "b")
        charge("2026-03-03", "c")  # cutoff 2026-03-01: nothing before it yet
        assert {r.day for r in s.rollup(["2026-03-01", "2026-03-02", "2026-03-03"])} == {
            "2026-03-01",
            "2026-03-02",
            "2026-03-03",
        }
        charge("2026-03-04", "d")  # cutoff 2026-03-02: 2026-03-01 goes
        assert {r.day for r in s.rollup(["2026-03-01", "2026-03-02"])} == {"2026-03-02"}


def test_a_directory_that_cannot_be_created_names_the_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "not-a-dir").write_text("a file, not a directory")
    url = "sqlite:///not-a-dir/ledger.db"
    with pytest.raises(BudgetUnavailableError) as info:
        SQLiteStore(url)
    assert str(tmp_path / "not-a-dir" / "ledger.db") in str(info.value)
    assert info.value.store == url
    assert isinstance(info.value, ConnectionError)
    assert isinstance(info.value, TokenBudgetError)


def test_a_file_that_is_not_a_database_names_the_path(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.db"
    bogus.write_bytes(b"these are not the pages you are looking for" * 100)
    with pytest.raises(BudgetUnavailableError, match="not a database") as info:
        SQLiteStore(f"sqlite:///{bogus}")
    assert str(bogus) in str(info.value)


def test_a_newer_schema_is_refused(db_path: Path, url: str) -> None:
    SQLiteStore(url).close()
    raw = sqlite3.connect(db_path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(BudgetUnavailableError, match="upgrade tokenbudget-kit"):
        SQLiteStore(url)


def test_a_lock_held_past_the_timeout_is_unavailable(store: SQLiteStore, db_path: Path, url: str) -> None:
    with closing(SQLiteStore(url, timeout_s=0.05)) as impatient:
        raw = sqlite3.connect(db_path, isolation_level=None)
        raw.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(BudgetUnavailableError, match="locked"):
                reserve(impatient, "r", 1, None)
            assert impatient.rollup([DAY]) == []  # readers are not blocked by the writer (WAL)
        finally:
            raw.execute("ROLLBACK")
            raw.close()
        assert reserve(impatient, "r", 1, None).ok  # usable again once the lock is gone


class _BusyWalSwitch(sqlite3.Connection):
    """A connection whose first switches to WAL meet another process switching too."""

    busy_left = 0

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if "journal_mode" in sql and _BusyWalSwitch.busy_left > 0:
            _BusyWalSwitch.busy_left -= 1
            error = sqlite3.OperationalError("database is locked")
            error.sqlite_errorcode = sqlite3.SQLITE_BUSY
            raise error
        return super().execute(sql, *args)


def test_a_busy_switch_to_wal_is_retried_until_the_timeout(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: connect(*a, factory=_BusyWalSwitch, **k))
    monkeypatch.setattr(_BusyWalSwitch, "busy_left", 3)
    with closing(SQLiteStore(url, timeout_s=5)) as s:  # SQLite does not wait here by itself
        s.ping()
    monkeypatch.setattr(_BusyWalSwitch, "busy_left", 10**6)
    with pytest.raises(BudgetUnavailableError, match="locked"):
        SQLiteStore(url, timeout_s=0.05)


def test_a_closed_store_is_unavailable(url: str) -> None:
    s = SQLiteStore(url)
    s.close()
    s.close()  # idempotent
    with pytest.raises(BudgetUnavailableError, match="closed"):
        s.ping()


@pytest.mark.parametrize("bad", ["sqlite://", "sqlite:///", "postgres:///x.db"])
def test_urls_that_are_not_sqlite_are_invalid_input(bad: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape("sqlite:///relative/path.db")):
        SQLiteStore(bad)


def test_money_must_be_an_int(store: SQLiteStore) -> None:
    with pytest.raises(InvalidInputError, match="amount"):
        reserve(store, "r", 1.5, None)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="cost_nanos"):
        store.record_call_cost(DAY, "f", 0.25)  # type: ignore[arg-type]
    assert totals(store) == (0, 0)


def test_threads_sharing_one_store_never_overspend(store: SQLiteStore) -> None:
    granted: list[str] = []

    def worker(n: int) -> None:
        for i in range(25):
            rid = f"t{n}-{i}"
            if reserve(store, rid, 7, 500).ok:
                granted.append(rid)
                commit(store, rid, 7)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 500 // 7
    assert totals(store) == (7 * (500 // 7), 0)


def _reserve_in_child(store: SQLiteStore) -> None:
    inherited = store._conn
    outcome = store.reserve(
        ReserveRequest(
            day=DAY,
            request_id="child",
            checks=[Check(scope="global", metric="nanos", amount=3)],
            now_ms=0,
            lease_ms=60_000,
        )
    )
    sys.exit(0 if outcome.ok and store._conn is not inherited else 1)


@pytest.mark.skipif(sys.platform != "linux", reason="fork() is the Linux default start method")
def test_a_forked_child_opens_its_own_connection(store: SQLiteStore) -> None:
    store.ping()  # the parent's connection is open when the child is forked
    child = multiprocessing.get_context("fork").Process(target=_reserve_in_child, args=(store,))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert store.totals(DAY, [("global", "nanos")], 0) == {("global", "nanos"): (0, 3)}


class TestSameSemanticsAsTheMemoryStore:
    """Corners of the contract the shared suite does not pin, run on both backends side by side."""

    @pytest.fixture(params=["memory", "sqlite"])
    def store(self, request: pytest.FixtureRequest, url: str) -> Iterator[LedgerStore]:
        s = open_store("memory://" if request.param == "memory" else url)
        yield s
        s.close()

    def test_release_of_an_unknown_id_is_remembered(self, store: LedgerStore) -> None:
        assert not store.release(DAY, "late", 1_000)
        again = reserve(store, "late", 100, 1_000)  # the settle overtook its reservation: reserve nothing
        assert again.ok
        assert again.duplicate
        assert again.state == "released"
        assert totals(store) == (0, 0)
        assert commit(store, "late", 60).previous == "released"  # the usage is still charged
        assert totals(store) == (60, 0)

    def test_expired_duplicate_and_late_release(self, store: LedgerStore) -> None:
        reserve(store, "r", 100, None, now=1_000, lease=1_000)
        assert totals(store, now=5_000) == (0, 0)
        assert reserve(store, "r", 100, None, now=5_000).state == "expired"
        assert not store.release(DAY, "r", 5_000)
        assert commit(store, "r", 10).previous == "expired"

    def test_the_budget_can_be_used_exactly(self, store: LedgerStore) -> None:
        assert reserve(store, "a", 400, 1_000).ok
        assert reserve(store, "b", 600, 1_000).ok
        assert not reserve(store, "c", 1, 1_000).ok

    def test_call_costs_keep_their_order(self, store: LedgerStore) -> None:
        for cost in (5, 1, 3):
            store.record_call_cost(DAY, "f", cost)
        assert store.call_costs(DAY, "f") == [5, 1, 3]

    def test_a_refused_request_is_not_remembered(self, store: LedgerStore) -> None:
        assert not reserve(store, "r", 2_000, 1_000).ok
        assert reserve(store, "r", 500, 1_000).state == "reserved"  # a retry with a smaller amount
        assert commit(store, "r", 400).previous == "reserved"


def test_retention_purges_once_per_day_per_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'once.db'}"

    def charge(s: SQLiteStore, day: str, rid: str) -> None:
        s.commit(
            CommitRequest(
                day=day, request_id=rid, charges=[], rollup_key="k", rollup={"requests": 1}, now_ms=0
            )
        )

    with closing(SQLiteStore(url, retention_days=1)) as s:
        charge(s, "2026-05-10", "a")  # purges before 2026-05-09
        charge(s, "2026-05-01", "old")  # an old day arrives late: not purged again today
        charge(s, "2026-05-10", "b")
        assert [r.day for r in s.rollup(["2026-05-01"])] == ["2026-05-01"]
        charge(s, "2026-05-11", "c")  # a new day: purges again
        assert s.rollup(["2026-05-01"]) == []
