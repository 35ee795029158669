"""The SQLite store's safety rails, on real files in ``tmp_path``:

* ``read_only=True`` (what ``tokenbudget report`` and ``budgets`` open) never modifies the file,
  refuses a file that holds no ledger, and reads a ledger another process is writing;
* a request carrying a far-future day cannot purge the present;
* an ``int`` subclass (``TokenCount``) is stored as its value, as the other stores do.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from cli_support import run
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.cli import EXIT_BAD_INPUT, EXIT_OK
from tokenbudget_core.counting import TokenCount, TokenCounter
from tokenbudget_core.errors import BudgetUnavailableError, InvalidInputError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.stores.base import Check, CommitRequest, ReserveRequest
from tokenbudget_core.stores.sqlite import SCHEMA_VERSION, SQLiteStore
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")


def utc_today() -> date:
    return datetime.now(UTC).date()


def commit_request(day: str, rid: str, amount: int = 5, **rollup: int) -> CommitRequest:
    return CommitRequest(
        day=day,
        request_id=rid,
        charges=[Check(scope="g", metric="nanos", amount=amount)],
        rollup_key="f/u/m",
        rollup=rollup or {"requests": 1, "cost_nanos": amount},
        now_ms=0,
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(path: Path) -> tuple[list[str], str, int, str]:
    """Tables, journal mode, user_version and bytes of a database, read without changing it."""
    with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
        tables = sorted(r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
    return tables, mode, version, digest(path)


@pytest.fixture
def app_db(tmp_path: Path) -> Path:
    """Another application's SQLite database (rollback journal, user_version 0)."""
    path = tmp_path / "app.db"
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL)")
        db.execute("INSERT INTO orders (total) VALUES (9.5)")
        db.commit()
    return path


@pytest.fixture
def ledger_db(tmp_path: Path) -> Path:
    """A ledger with two calls recorded today, closed (so without -wal / -shm files)."""
    path = tmp_path / "ledger.db"
    ledger = Ledger(f"sqlite:///{path}")
    ledger.record(Usage(input_tokens=1_000, output_tokens=100), model="gpt-4o", feature="chat", user="u1")
    ledger.record(Usage(input_tokens=500, output_tokens=50), model="gpt-4o-mini", feature="chat", user="u2")
    ledger.close()
    return path


# -- read_only: the store ---------------------------------------------------------------------------


def test_read_only_refuses_a_database_that_is_not_a_ledger_and_leaves_it_alone(app_db: Path) -> None:
    before = snapshot(app_db)
    with pytest.raises(InvalidInputError) as info:
        SQLiteStore(f"sqlite:///{app_db}", read_only=True)
    assert info.value.field == "store"
    assert "not a tokenbudget ledger" in str(info.value)
    assert str(app_db) in str(info.value)
    assert snapshot(app_db) == before == (["orders"], "delete", 0, before[3])
    assert sorted(p.name for p in app_db.parent.iterdir()) == ["app.db"]  # no -wal, -shm or journal


def test_read_only_refuses_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    with pytest.raises(InvalidInputError, match="not a tokenbudget ledger"):
        SQLiteStore(f"sqlite:///{path}", read_only=True)
    assert path.read_bytes() == b""


def test_read_only_never_creates_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "missing.db"
    with pytest.raises(BudgetUnavailableError):
        SQLiteStore(f"sqlite:///{path}", read_only=True)
    assert not path.parent.exists()


def test_read_only_in_memory_is_invalid() -> None:
    with pytest.raises(InvalidInputError, match="read_only"):
        SQLiteStore("sqlite:///:memory:", read_only=True)


def test_read_only_refuses_a_newer_schema(ledger_db: Path) -> None:
    with closing(sqlite3.connect(ledger_db)) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(BudgetUnavailableError, match="upgrade tokenbudget-kit"):
        SQLiteStore(f"sqlite:///{ledger_db}", read_only=True)


def test_read_only_reads_and_refuses_every_write(ledger_db: Path) -> None:
    today = utc_today().isoformat()
    before = digest(ledger_db)
    with closing(SQLiteStore(f"sqlite:///{ledger_db}", read_only=True)) as store:
        assert store.read_only
        rows = store.rollup([today])
        assert sum(r.values["requests"] for r in rows) == 2
        assert len(store.call_costs(today, "chat")) == 2
        store.ping()
        writes = [
            lambda: store.commit(commit_request(today, "new")),
            lambda: store.reserve(
                ReserveRequest(day=today, request_id="r", checks=[], now_ms=0, lease_ms=1_000)
            ),
            lambda: store.release(today, "r", 0),
            lambda: store.mark_once("k", 60),
            lambda: store.record_call_cost(today, "chat", 1),
            lambda: store.purge("2999-01-01"),
        ]
        for write in writes:
            with pytest.raises(BudgetUnavailableError, match="read-only"):
                write()
        assert sum(r.values["requests"] for r in store.rollup([today])) == 2
    assert digest(ledger_db) == before
    with closing(SQLiteStore(f"sqlite:///{ledger_db}")) as rw:  # and the file is still a good ledger
        assert sum(r.values["requests"] for r in rw.rollup([today])) == 2


def test_read_only_totals_count_passed_leases_as_released_without_writing(tmp_path: Path) -> None:
    path = tmp_path / "leases.db"
    day = "2026-11-20"
    with closing(SQLiteStore(f"sqlite:///{path}", retention_days=None)) as rw:
        for rid, amount, lease in (("gone", 7, 1_000), ("live", 3, 100_000)):
            check = Check(scope="g", metric="nanos", amount=amount, limit=100)
            assert rw.reserve(
                ReserveRequest(day=day, request_id=rid, checks=[check], now_ms=0, lease_ms=lease)
            ).ok
        rw.commit(commit_request(day, "paid", amount=20))
    before = digest(path)
    with closing(SQLiteStore(f"sqlite:///{path}", read_only=True)) as ro:
        assert ro.totals(day, [("g", "nanos")], now_ms=500) == {("g", "nanos"): (20, 10)}
        assert ro.totals(day, [("g", "nanos"), ("x", "tokens")], now_ms=5_000) == {
            ("g", "nanos"): (20, 3),
            ("x", "tokens"): (0, 0),
        }
    assert digest(path) == before
    with closing(sqlite3.connect(path)) as db:  # the passed lease is still in the file, unexpired
        assert db.execute("SELECT state FROM requests WHERE request_id = 'gone'").fetchone() == ("reserved",)
    with closing(SQLiteStore(f"sqlite:///{path}", retention_days=None)) as rw:  # the same figures
        assert rw.totals(day, [("g", "nanos")], now_ms=5_000) == {("g", "nanos"): (20, 3)}


def test_the_default_store_still_creates_and_migrates(tmp_path: Path) -> None:
    path = tmp_path / "new" / "ledger.db"
    with closing(SQLiteStore(f"sqlite:///{path}")) as store:
        assert not store.read_only
        store.commit(commit_request("2026-11-20", "a"))
    tables, mode, version, _ = snapshot(path)
    assert {"balances", "requests", "rollup", "marks", "call_costs"} <= set(tables)
    assert (mode, version) == ("wal", SCHEMA_VERSION)


# -- read_only: the commands ------------------------------------------------------------------------


@pytest.mark.parametrize("command", [("report", "--days", "1"), ("report", "--json"), ("budgets",)])
def test_commands_refuse_a_database_that_is_not_a_ledger_and_leave_it_alone(
    tmp_path: Path, app_db: Path, command: tuple[str, ...]
) -> None:
    policy = tmp_path / "budgets.toml"
    policy.write_text('daily_usd = "5"\n')
    extra = ("--policy", str(policy)) if command[0] == "budgets" else ()
    before = snapshot(app_db)
    result = run(*command, "--store", f"sqlite:///{app_db}", *extra)
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: --store: ")
    assert "not a tokenbudget ledger" in line
    assert str(app_db) in line
    assert snapshot(app_db) == before
    assert sorted(p.name for p in app_db.parent.iterdir()) == sorted(["app.db", "budgets.toml"])


def test_installed_script_report_leaves_another_apps_database_alone(app_db: Path) -> None:
    before = snapshot(app_db)
    script = Path(sys.executable).with_name("tokenbudget")
    out = subprocess.run(
        [str(script), "report", "--store", f"sqlite:///{app_db}", "--days", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == EXIT_BAD_INPUT, out.stdout + out.stderr
    assert "not a tokenbudget ledger" in out.stderr
    assert snapshot(app_db) == before


def test_commands_read_an_empty_ledger(tmp_path: Path) -> None:
    path = tmp_path / "empty-ledger.db"
    Ledger(f"sqlite:///{path}").close()
    assert not Path(f"{path}-wal").exists()  # closed cleanly: the reader starts from the main file alone
    before = digest(path)
    result = run("report", "--store", f"sqlite:///{path}", "--json")
    assert result.exit_code == EXIT_OK, result.output
    data = json.loads(result.stdout)
    assert data["totals"]["requests"] == 0
    assert Decimal(data["totals"]["cost_usd"]) == 0
    policy = tmp_path / "budgets.toml"
    policy.write_text('daily_usd = "5"\n')
    budgets = run("budgets", "--store", f"sqlite:///{path}", "--policy", str(policy), "--json")
    assert budgets.exit_code == EXIT_OK, budgets.output
    assert [r["used"] for r in json.loads(budgets.stdout)["budgets"]] == ["0"]
    assert digest(path) == before


def test_commands_never_write_to_a_ledger(tmp_path: Path) -> None:
    """An unsettled reservation whose lease has passed: a read-write store would mark it expired."""
    path = tmp_path / "ledger.db"
    policy = tmp_path / "budgets.toml"
    policy.write_text('daily_usd = "5"\n')
    ledger = Ledger(f"sqlite:///{path}", policy=BudgetPolicy(daily_usd="5"), lease_seconds=0.001)
    ledger.record(Usage(input_tokens=1_000, output_tokens=100), model="gpt-4o")
    ledger.reserve(model="gpt-4o", input_tokens=100_000, max_output_tokens=1_000)
    ledger.close()
    time.sleep(0.01)
    before = snapshot(path)
    report = run("report", "--store", f"sqlite:///{path}", "--json")
    assert report.exit_code == EXIT_OK, report.output
    budgets = run("budgets", "--store", f"sqlite:///{path}", "--policy", str(policy), "--json")
    assert budgets.exit_code == EXIT_OK, budgets.output
    (row,) = json.loads(budgets.stdout)["budgets"]
    assert Decimal(row["used"]) == Decimal(json.loads(report.stdout)["totals"]["cost_usd"])  # lease passed
    assert snapshot(path) == before
    wal = Path(f"{path}-wal")  # a WAL reader may leave SQLite's side files, with nothing in them
    assert not wal.exists() or wal.stat().st_size == 0


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from tokenbudget_core.ledger import Ledger
    from tokenbudget_core.usage import Usage

    path, stop = sys.argv[1], Path(sys.argv[2])
    ledger = Ledger(f"sqlite:///{path}", spool_path=path + ".spool")
    print("ready", flush=True)
    n = 0
    while not stop.exists():
        usage = Usage(input_tokens=100, output_tokens=10)
        ledger.record(usage, model="gpt-4o", feature="live", user=f"u{n % 7}")
        n += 1
    ledger.close()
    print(n, flush=True)
    """
)


@pytest.fixture
def live_writer(tmp_path: Path) -> Iterator[tuple[Path, Path, subprocess.Popen[str]]]:
    """A brand-new ledger that another process keeps recording to until ``stop`` exists."""
    path, stop = tmp_path / "live.db", tmp_path / "stop"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(stop)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        yield path, stop, proc
    finally:
        stop.touch()
        proc.wait(timeout=60)
        if proc.stdout is not None:
            proc.stdout.close()


def test_report_reads_a_ledger_another_process_is_writing(
    live_writer: tuple[Path, Path, subprocess.Popen[str]],
) -> None:
    path, stop, proc = live_writer
    policy = path.with_suffix(".toml")
    policy.write_text('daily_usd = "1000"\n[features.live]\nfeature_daily_usd = "100"\n')
    seen: list[int] = []
    deadline = time.monotonic() + 30
    while sum(1 for n in seen if n > 0) < 5:  # five reports while the writer is at work
        assert time.monotonic() < deadline, seen
        result = run("report", "--store", f"sqlite:///{path}", "--days", "1", "--json")
        assert result.exit_code == EXIT_OK, result.output
        seen.append(json.loads(result.stdout)["totals"]["requests"])
        budgets = run("budgets", "--store", f"sqlite:///{path}", "--policy", str(policy), "--json")
        assert budgets.exit_code == EXIT_OK, budgets.output
        time.sleep(0.02)
    assert seen == sorted(seen)  # every snapshot is consistent and none goes back
    stop.touch()
    assert proc.stdout is not None
    written = int(proc.stdout.readline())
    assert proc.wait(timeout=60) == 0
    final = run("report", "--store", f"sqlite:///{path}", "--days", "1", "--json")
    assert json.loads(final.stdout)["totals"]["requests"] == written >= seen[-1]


# -- a far-future day cannot purge the present -------------------------------------------------------


def days_present(store: SQLiteStore, *days: date) -> set[str]:
    return {r.day for r in store.rollup([d.isoformat() for d in days])}


def test_a_far_future_day_does_not_purge_recent_days(tmp_path: Path) -> None:
    today = utc_today()
    recent, old = today - timedelta(days=10), today - timedelta(days=500)
    with closing(SQLiteStore(f"sqlite:///{tmp_path / 'p.db'}", retention_days=400)) as store:
        store.commit(commit_request(old.isoformat(), "old"))
        store.commit(commit_request(recent.isoformat(), "recent"))
        store.commit(commit_request(today.isoformat(), "today"))
        assert days_present(store, old, recent, today) == {recent.isoformat(), today.isoformat()}
        store.commit(commit_request("2999-01-01", "forged"))
        store.commit(commit_request("9999-12-31", "forged-2"))
        assert days_present(store, recent, today) == {recent.isoformat(), today.isoformat()}
        assert store.totals(today.isoformat(), [("g", "nanos")], 0) == {("g", "nanos"): (5, 0)}


def test_retention_still_counts_back_from_tomorrow_utc(tmp_path: Path) -> None:
    """A ledger day is at most one day ahead of UTC (UTC+14 zones): tomorrow (UTC) is a real day.
    And at most one behind (UTC-12): yesterday (UTC) is never purged, whatever the retention."""
    today = utc_today()
    tomorrow, yesterday, before = (
        today + timedelta(days=1),
        today - timedelta(days=1),
        today - timedelta(days=2),
    )
    with closing(SQLiteStore(f"sqlite:///{tmp_path / 'z.db'}", retention_days=1)) as store:
        for d in (before, yesterday, today):
            store.commit(commit_request(d.isoformat(), f"r-{d}"))
        assert days_present(store, before, yesterday, today) == {yesterday.isoformat(), today.isoformat()}
        store.commit(commit_request(tomorrow.isoformat(), "kiritimati"))  # one day before it: today
        live = {yesterday.isoformat(), today.isoformat(), tomorrow.isoformat()}  # yesterday: UTC-12's today
        assert days_present(store, yesterday, today, tomorrow) == live
        store.commit(commit_request((today + timedelta(days=30)).isoformat(), "future"))
        assert days_present(store, yesterday, today, tomorrow) == live


def test_a_forged_day_in_a_commit_keeps_todays_budget_and_attribution(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}", policy=BudgetPolicy(daily_usd="1"))
    try:
        r = ledger.reserve(model="gpt-4o", input_tokens=10_000, max_output_tokens=1_000)
        ledger.commit(r, Usage(input_tokens=10_000, output_tokens=1_000))
        headroom = ledger.state().headroom["daily_usd"]
        rows = ledger.store.rollup([ledger.day()])
        forged = dataclasses.replace(r, request_id="other-call", day="2999-01-01")
        ledger.commit(forged, Usage(input_tokens=10, output_tokens=1))
        assert ledger.state().headroom["daily_usd"] == headroom < Decimal(1)
        assert ledger.store.rollup([ledger.day()]) == rows
    finally:
        ledger.close()


# -- int subclasses ----------------------------------------------------------------------------------


def count(n: int) -> TokenCount:
    return TokenCount(n, exact=True, model="gpt-4o", method="tiktoken")


def test_token_counts_are_stored_as_their_value(tmp_path: Path) -> None:
    day = "2026-11-20"
    with closing(SQLiteStore(f"sqlite:///{tmp_path / 't.db'}", retention_days=None)) as store:
        check = Check(scope="u", metric="tokens", amount=count(120), limit=1_000)
        assert store.reserve(
            ReserveRequest(day=day, request_id="r", checks=[check], now_ms=0, lease_ms=10**6)
        ).ok
        req = CommitRequest(
            day=day,
            request_id="r",
            charges=[Check(scope="u", metric="tokens", amount=count(110))],
            rollup_key="f/u/m",
            rollup={"requests": 1, "input_tokens": count(100), "output_tokens": count(10), "cost_nanos": 7},
            now_ms=0,
            call_cost_key="f",
        )
        assert store.commit(req).applied
        store.record_call_cost(day, "f", count(3))
        (row,) = store.rollup([day])
        assert row.values == {"requests": 1, "input_tokens": 100, "output_tokens": 10, "cost_nanos": 7}
        assert all(type(v) is int for v in row.values.values())
        assert store.totals(day, [("u", "tokens")], 0) == {("u", "tokens"): (110, 0)}
        assert store.call_costs(day, "f") == [7, 3]


@pytest.mark.parametrize("bad", [True, 1.0, "5", None, 2**63, -(2**63) - 1])
def test_amounts_that_are_not_64_bit_ints_are_refused(tmp_path: Path, bad: object) -> None:
    with closing(SQLiteStore(f"sqlite:///{tmp_path / 'b.db'}", retention_days=None)) as store:
        with pytest.raises(InvalidInputError, match="amount"):
            store.commit(commit_request("2026-11-20", "x", amount=bad))  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError, match="input_tokens"):
            store.commit(commit_request("2026-11-20", "y", input_tokens=bad))  # type: ignore[arg-type]
        assert store.rollup(["2026-11-20"]) == []


def test_a_counted_input_settles_on_sqlite_as_on_memory(tmp_path: Path) -> None:
    n = TokenCounter.for_model("gpt-4o").count_messages([{"role": "user", "content": "hello there"}])
    assert isinstance(n, TokenCount)
    results = {}
    for url in ("memory://", f"sqlite:///{tmp_path / 'c.db'}"):
        ledger = Ledger(url)
        try:
            r = ledger.reserve(model="gpt-4o", input_tokens=n, max_output_tokens=100)
            charge = ledger.settle(r, None, reply_text="hi")
            results[url.split(":")[0]] = (charge.applied, int(charge.usage.input_tokens))
        finally:
            ledger.close()
    assert results["sqlite"] == results["memory"] == (True, int(n))
