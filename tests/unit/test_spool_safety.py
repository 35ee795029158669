"""The spool shared by processes: nothing appended during a replay is lost, a replay cut short by
a crash is finished by the next, an unreadable or refused line is quarantined instead of blocking
the spool (or raising out of unrelated ledger calls), and each Redis namespace has its own spool."""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from tokenbudget_core.errors import BudgetUnavailableError
from tokenbudget_core.ledger import Ledger, default_spool_path
from tokenbudget_core.spool import Spool
from tokenbudget_core.stores.base import Check, CommitOutcome, CommitRequest, ReserveOutcome, ReserveRequest
from tokenbudget_core.stores.memory import MemoryStore
from tokenbudget_core.stores.redis import RedisStore
from tokenbudget_core.stores.sqlite import SQLiteStore
from tokenbudget_core.usage import Usage

DAY = "2026-11-23"

# A commit of 100 nano-USD; the child processes build the same one.
_REQ = """
from tokenbudget_core.stores.base import Check, CommitRequest

def req(rid):
    return CommitRequest(
        day="2026-11-23", request_id=rid, charges=[Check(scope="g", metric="nanos", amount=100)],
        rollup_key="//gpt-4o", rollup={"requests": 1, "cost_nanos": 100}, now_ms=0,
    )
"""
exec(_REQ)  # defines req() here too

APPENDER = (
    _REQ
    + """
import sys
from tokenbudget_core.spool import Spool

spool = Spool(sys.argv[1])
for i in range(int(sys.argv[3])):
    spool.append(req(f"{sys.argv[2]}-{i}"))
"""
)

REPLAYER = """
import sys, time
from pathlib import Path
from tokenbudget_core.spool import Spool
from tokenbudget_core.stores.sqlite import SQLiteStore

spool, store, stop = Spool(sys.argv[1]), SQLiteStore(sys.argv[2]), Path(sys.argv[3])
print("ready", flush=True)
sys.stdin.readline()  # go
applied = 0
while not stop.exists():
    applied += spool.replay(store)
    time.sleep(0.001)
print(applied, flush=True)
store.close()
"""


def req(rid: str, amount: int = 100) -> CommitRequest:
    return CommitRequest(
        day=DAY,
        request_id=rid,
        charges=[Check(scope="g", metric="nanos", amount=amount)],
        rollup_key="//gpt-4o",
        rollup={"requests": 1, "cost_nanos": amount},
        now_ms=0,
    )


def python(code: str, *args: object, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-c", code, *map(str, args)], text=True, **kwargs
    )


def spent(store: SQLiteStore) -> int:
    return store.totals(DAY, [("g", "nanos")], 0)[("g", "nanos")][0]


def requests(store: SQLiteStore) -> int:
    return sum(row.values.get("requests", 0) for row in store.rollup([DAY]))


def beside(spool: Spool, suffix: str) -> Path:
    """``<spool>.replaying`` (a replay's lines) or ``<spool>.bad`` (quarantined lines)."""
    return spool.path.with_name(f"{spool.path.name}.{suffix}")


def wait_for(condition: object, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.005)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


@pytest.fixture
def store(db: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(f"sqlite:///{db}")
    yield s
    s.close()


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool.jsonl")


class LockedDatabase:
    """Another connection holding SQLite's write lock: the store's commits wait (or time out)."""

    def __init__(self, db: Path) -> None:
        self.conn = sqlite3.connect(db, isolation_level=None)

    def __enter__(self) -> LockedDatabase:
        self.conn.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.execute("ROLLBACK")
        self.conn.close()


# -- several processes on one spool --------------------------------------------------------------


def test_lines_another_process_appends_during_a_replay_are_kept(
    spool: Spool, store: SQLiteStore, db: Path
) -> None:
    for i in range(3):
        spool.append(req(f"old-{i}"))
    results: list[int] = []
    with LockedDatabase(db):  # the replay's first commit waits for the lock: a slow store
        replay = threading.Thread(target=lambda: results.append(spool.replay(store)))
        replay.start()
        wait_for(beside(spool, "replaying").exists, timeout=1.0)
        appender = python(APPENDER, spool.path, "new", 5)
        assert appender.wait(timeout=10) == 0
    replay.join(timeout=10)
    assert results == [3]
    assert len(spool) == 5  # appended while the replay ran: waiting in the spool
    assert spool.replay(store) == 5
    assert not spool.pending()
    assert (spent(store), requests(store)) == (800, 8)


def test_concurrent_appenders_and_replayers_apply_each_line_exactly_once(
    spool: Spool, store: SQLiteStore, db: Path, tmp_path: Path
) -> None:
    stop = tmp_path / "stop"
    replayer = python(
        REPLAYER, spool.path, f"sqlite:///{db}", stop, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert replayer.stdout is not None
    assert replayer.stdin is not None
    assert replayer.stdout.readline().strip() == "ready"
    replayer.stdin.write("go\n")
    replayer.stdin.flush()
    appenders = [python(APPENDER, spool.path, name, 100) for name in ("a", "b")]
    applied = 0
    while any(p.poll() is None for p in appenders):
        applied += spool.replay(store)
    assert [p.wait() for p in appenders] == [0, 0]
    stop.touch()
    out, _ = replayer.communicate(timeout=10)
    applied += int(out.strip()) + spool.replay(store, wait=True)
    assert applied == 200  # the store's idempotence counts a line twice as once; nothing lost
    assert (spent(store), requests(store)) == (20_000, 200)
    assert not spool.pending()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_replay_killed_midway_is_finished_by_the_next(spool: Spool, store: SQLiteStore, db: Path) -> None:
    for i in range(4):
        spool.append(req(f"old-{i}"))
    stop = db.with_name("never")
    replayer = python(
        REPLAYER, spool.path, f"sqlite:///{db}", stop, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert replayer.stdout is not None
    assert replayer.stdin is not None
    try:
        assert replayer.stdout.readline().strip() == "ready"
        with LockedDatabase(db):
            replayer.stdin.write("go\n")
            replayer.stdin.flush()
            wait_for(beside(spool, "replaying").exists)  # it took the lines and waits for the store
            replayer.send_signal(signal.SIGKILL)
            replayer.wait(timeout=10)
    finally:
        replayer.kill()
        replayer.communicate()
    spool.append(req("new-0"))
    assert spool.pending()
    assert len(spool) == 5
    assert spool.replay(store) == 5
    assert not beside(spool, "replaying").exists()
    assert not spool.pending()
    assert (spent(store), requests(store)) == (500, 5)


def test_lines_wait_while_the_store_is_unavailable(spool: Spool, db: Path) -> None:
    store = SQLiteStore(f"sqlite:///{db}", timeout_s=0.05)
    try:
        for i in range(3):
            spool.append(req(f"r-{i}"))
        with LockedDatabase(db):
            assert spool.replay(store) == 0  # BudgetUnavailableError: kept, not raised
        assert len(spool) == 3
        assert not beside(spool, "bad").exists()
        assert spool.replay(store) == 3
        assert not spool.pending()
    finally:
        store.close()


# -- unreadable and refused lines ----------------------------------------------------------------

TORN = b'{"day":"2026-11-23","request_id":"torn","charg'


def test_a_torn_line_is_quarantined_and_the_rest_replayed(
    spool: Spool, store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    spool.append(req("a"))
    with spool.path.open("ab") as f:
        f.write(TORN + b"\n" + b"\xff\xfe not even text\n" + b'["a list"]\n')
    spool.append(req("b"))
    with caplog.at_level(logging.WARNING, logger="tokenbudget.spool"):
        assert spool.replay(store) == 2
    assert not spool.pending()
    bad = [json.loads(line) for line in beside(spool, "bad").read_text().splitlines()]
    assert [b["line"].encode("utf-8", "surrogateescape") for b in bad] == [
        TORN,
        b"\xff\xfe not even text",
        b'["a list"]',
    ]
    assert all(b["reason"].startswith("unreadable: ") for b in bad)
    assert "JSONDecodeError" in bad[0]["reason"]
    warnings = [r for r in caplog.records if r.name == "tokenbudget.spool"]
    assert len(warnings) == 3
    assert all(r.levelno == logging.WARNING for r in warnings)
    assert str(beside(spool, "bad")) in warnings[0].getMessage()
    assert (spent(store), requests(store)) == (200, 2)


def test_a_torn_tail_does_not_swallow_the_next_append(spool: Spool, store: SQLiteStore) -> None:
    spool.path.write_bytes(TORN)  # a crash mid-append: no newline
    spool.append(req("after"))
    assert spool.replay(store) == 1
    assert len(beside(spool, "bad").read_text().splitlines()) == 1
    assert spent(store) == 100


def test_a_line_the_store_refuses_for_good_is_quarantined_with_the_reason(
    spool: Spool, store: SQLiteStore
) -> None:
    spool.append(req("ok-1"))
    line = json.loads(json.dumps(asdict(req("a-string"))))
    line["charges"][0]["amount"] = "100"  # reads back as a commit, which every store refuses
    with spool.path.open("a") as f:
        f.write(json.dumps(line) + "\n")
    spool.append(req("ok-2"))
    assert spool.replay(store) == 2
    (bad,) = [json.loads(line) for line in beside(spool, "bad").read_text().splitlines()]
    assert bad["reason"].startswith("refused by the store: InvalidInputError")
    assert json.loads(bad["line"])["request_id"] == "a-string"
    assert not spool.pending()
    assert spent(store) == 200


def test_ledger_calls_go_on_past_an_unreadable_spool_line(tmp_path: Path) -> None:
    spool_path = tmp_path / "spool.jsonl"
    spool_path.write_bytes(TORN + b"\n")
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}", spool_path=spool_path, alerts=[])
    try:
        r = ledger.reserve(model="gpt-4o", input_tokens=100, max_output_tokens=10, request_id="call-1")
        assert ledger.commit(r, Usage(input_tokens=100, output_tokens=10)).applied
        assert not ledger.spool.pending()
        assert beside(ledger.spool, "bad").exists()
    finally:
        ledger.close()


# -- one spool per store -------------------------------------------------------------------------


def test_each_redis_namespace_gets_its_own_default_spool() -> None:
    url = "redis://:secret@127.0.0.1:1/0"  # never connected to
    stores = [RedisStore(url, namespace=ns) for ns in ("tenant-a", "tenant-b", "tenant-a", "tb")]
    try:
        a, b, a_again, default = map(default_spool_path, stores)
        assert a != b
        assert a == a_again
        assert len({a, b, default}) == 3
        # Named by where the data lives, not by the URL's spelling (its password left out).
        where = "redis://127.0.0.1:1/0?namespace=tb"
        assert default.name == f"spool-{hashlib.sha256(where.encode()).hexdigest()[:16]}.jsonl"
        assert "secret" not in str(a)
    finally:
        for s in stores:
            s.close()


# -- conversations of spooled commits ---------------------------------------------------------------


class _FlakyStore(MemoryStore):
    """A memory store (seen as any store: no fast path) that can be taken down."""

    down = False

    def _check(self) -> None:
        if self.down:
            raise BudgetUnavailableError("flaky://", "down")

    def reserve(self, req: ReserveRequest) -> ReserveOutcome:
        self._check()
        return super().reserve(req)

    def commit(self, req: CommitRequest) -> CommitOutcome:
        self._check()
        return super().commit(req)

    def mark_once(self, key: str, ttl_s: int) -> bool:
        self._check()
        return super().mark_once(key, ttl_s)


def test_conversations_of_spooled_commits_are_counted_once_on_replay(tmp_path: Path) -> None:
    store = _FlakyStore()
    ledger = Ledger(store, on_unavailable="open", spool_path=tmp_path / "spool.jsonl", alerts=[])

    def call(conversation: str) -> None:
        r = ledger.reserve(model="gpt-4o", input_tokens=10, max_output_tokens=5, conversation=conversation)
        ledger.commit(r, Usage(input_tokens=10, output_tokens=5))

    call("c0")  # counted now
    store.down = True
    for conversation in ("c1", "c1", "c0", "c2"):
        call(conversation)
    assert len(ledger.spool) == 4
    store.down = False
    assert ledger.replay_spool() == 4
    assert ledger.replay_spool() == 0
    (row,) = store.rollup([ledger.day()])
    assert row.values["requests"] == 5
    assert row.values["conversations"] == 3  # c0, c1, c2: each once
