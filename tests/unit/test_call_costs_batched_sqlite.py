"""SQLite reads a report's cost samples in a few queries, not one per (day, feature).

The statements are counted with ``sqlite3``'s trace callback on the store's own connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from store_contract import OnePairAtATime
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report
from tokenbudget_core.stores import sqlite as sqlite_store
from tokenbudget_core.stores.sqlite import SQLiteStore
from tokenbudget_core.usage import Usage

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
FEATURES = [f"feature {i}" if i % 3 else f"f/{i}:{{ü}}" for i in range(30)]
DAYS = 50


@contextmanager
def statements(store: SQLiteStore) -> Iterator[list[str]]:
    """The SQL the store runs while the block runs."""
    seen: list[str] = []
    conn: Any = store._conn
    conn.set_trace_callback(seen.append)
    try:
        yield seen
    finally:
        conn.set_trace_callback(None)


def reads_of_costs(seen: list[str]) -> int:
    return sum(1 for s in seen if s.lstrip().upper().startswith(("SELECT", "WITH")) and "call_costs" in s)


def fill(url: str, tmp_path: Path) -> int:
    """DAYS x FEATURES of recorded calls, a feature used on some days only; the pairs used."""
    store = SQLiteStore(url)
    ledger = Ledger(store, clock=NOW.timestamp, spool_path=tmp_path / "spool")
    used = 0
    for d in range(DAYS):
        for f, feature in enumerate(FEATURES):
            if (d + f) % 3:
                used += 1
                usage = Usage(input_tokens=100 + 37 * f + d, output_tokens=10 + (d * f) % 50)
                at = NOW - timedelta(days=d, hours=1)
                ledger.record(usage, model="gpt-4o-mini", feature=feature, user=f"u{f % 4}", at=at)
    store.close()
    return used


def test_a_report_reads_its_cost_samples_in_a_few_queries(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    used = fill(url, tmp_path)
    store = SQLiteStore(url, read_only=True)  # as `tokenbudget report` opens it
    try:
        ledger = Ledger(store, clock=NOW.timestamp, spool_path=tmp_path / "spool")
        with statements(store) as seen:
            report = build_report(ledger, last_days=366, top=100)
        assert used > 2 * sqlite_store._PAIRS_PER_QUERY
        # counted, then read: 3 queries each, not 1,000
        assert reads_of_costs(seen) == 2 * -(-used // sqlite_store._PAIRS_PER_QUERY)
        slow = Ledger(OnePairAtATime(store), clock=NOW.timestamp, spool_path=tmp_path / "slow")  # type: ignore[arg-type]
        with statements(store) as seen:
            expected = build_report(slow, last_days=366, top=100)
        assert reads_of_costs(seen) == used
        assert report.as_dict() == expected.as_dict()
        assert sum(s.calls for s in report.call_costs) == used
    finally:
        store.close()


def test_the_batched_read_is_one_snapshot_of_the_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    store = SQLiteStore(url)
    try:
        pairs = [(f"2026-11-{d:02d}", f) for d in range(1, 31) for f in FEATURES]  # 900 pairs
        for i, (day, feature) in enumerate(pairs[::7]):
            store.record_call_cost(day, feature, i)
        with statements(store) as seen:
            found = store.call_costs_many(pairs)
        assert found == {pair: store.call_costs(*pair) for pair in pairs}
        assert [s.split()[0] for s in seen] == ["BEGIN", "WITH", "WITH", "WITH", "COMMIT"]
    finally:
        store.close()


def test_the_batched_read_uses_the_index_however_many_pairs_it_asks_for(tmp_path: Path) -> None:
    """From about 400 pairs on, SQLite's planner chose an automatic index built over the whole
    table for every query (a report of a busy ledger re-indexing millions of rows per query):
    the query plan of each batched read names the (day, feature) index (review s23 #3)."""
    store = SQLiteStore(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        pairs = [(f"2026-11-{d:02d}", f"f{f}") for d in range(1, 31) for f in range(20)]  # 600 pairs
        conn: Any = store._conn
        with conn:
            conn.executemany(
                "INSERT INTO call_costs VALUES (?, ?, ?)", ((*pairs[i % 600], i) for i in range(60_000))
            )
        plans: list[str] = []
        original = conn.execute

        class Planned:
            """The store's connection, each SELECT of call_costs also asked for its query plan."""

            def __getattr__(self, name: str) -> Any:
                return getattr(conn, name)

            def execute(self, sql: str, *args: Any) -> Any:
                if sql.startswith("WITH wanted"):
                    plans.extend(row[3] for row in original("EXPLAIN QUERY PLAN " + sql, *args))
                return original(sql, *args)

        store._conn = Planned()
        try:
            assert sum(store.call_cost_counts(pairs).values()) == 60_000
            assert sum(len(c) for c in store.call_costs_many(pairs).values()) == 60_000
        finally:
            store._conn = conn
        searches = [p for p in plans if p.startswith("SEARCH c")]
        assert len(searches) == 4  # 2 reads x 2 queries (400 pairs each at most)
        assert all("call_costs_day_feature" in p for p in searches), searches
    finally:
        store.close()
