"""Ledgers of different stores sharing one spool file ($TOKENBUDGET_SPOOL, one spool_path): each
line names its owner, and a replay applies only its own owner's lines (and lines without one,
written by older versions), leaving every other line, in order, for its own ledger; also while
other processes append and replay concurrently."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.spool import Spool
from tokenbudget_core.stores.base import Check, CommitRequest
from tokenbudget_core.stores.memory import MemoryStore
from tokenbudget_core.stores.sqlite import SQLiteStore

DAY = "2026-11-23"

_REQ = """
from tokenbudget_core.stores.base import Check, CommitRequest

def req(rid, amount=100):
    return CommitRequest(
        day="2026-11-23", request_id=rid, charges=[Check(scope="g", metric="nanos", amount=amount)],
        rollup_key="//" + rid, rollup={"requests": 1, "cost_nanos": amount}, now_ms=0,
    )
"""
exec(_REQ)  # defines req() here too

APPENDER = (
    _REQ
    + """
import sys
from tokenbudget_core.spool import Spool

spool = Spool(sys.argv[1], owner=sys.argv[2])
for i in range(int(sys.argv[3])):
    spool.append(req(f"{sys.argv[2]}-{i}"))
"""
)

REPLAYER = """
import sys, time
from pathlib import Path
from tokenbudget_core.spool import Spool
from tokenbudget_core.stores.sqlite import SQLiteStore

spool = Spool(sys.argv[1], owner=sys.argv[2])
store, stop = SQLiteStore(sys.argv[3]), Path(sys.argv[4])
applied = 0
while not stop.exists():
    applied += spool.replay(store)
    time.sleep(0.001)
applied += spool.replay(store, wait=True)
print(applied, flush=True)
store.close()
"""


def req(rid: str, amount: int = 100) -> CommitRequest:
    return CommitRequest(
        day=DAY,
        request_id=rid,
        charges=[Check(scope="g", metric="nanos", amount=amount)],
        rollup_key="//" + rid,  # the request id as the model: which ids a store holds
        rollup={"requests": 1, "cost_nanos": amount},
        now_ms=0,
    )


def ids(store: SQLiteStore | MemoryStore) -> set[str]:
    """The request ids a store was charged for, read back from the store (each once)."""
    rows = store.rollup([DAY])
    assert all(row.values["requests"] == 1 for row in rows)
    return {row.rollup_key.removeprefix("//") for row in rows}


def spent(store: SQLiteStore | MemoryStore) -> int:
    return store.totals(DAY, [("g", "nanos")], 0)[("g", "nanos")][0]


def python(code: str, *args: object, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-c", code, *map(str, args)], text=True, **kwargs
    )


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[SQLiteStore, SQLiteStore]]:
    a, b = SQLiteStore(f"sqlite:///{tmp_path / 'a.db'}"), SQLiteStore(f"sqlite:///{tmp_path / 'b.db'}")
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "spool.jsonl"


def test_a_line_reaches_only_the_store_of_its_owner(
    path: Path, stores: tuple[SQLiteStore, SQLiteStore]
) -> None:
    store_a, store_b = stores
    spool_a, spool_b = Spool(path, owner="a"), Spool(path, owner="b")
    spool_a.append(req("a-0"))
    spool_b.append(req("b-0", 7))
    spool_a.append(req("a-1"))
    assert (len(spool_a), len(spool_b)) == (2, 1)  # each counts its own lines only

    assert spool_b.replay(store_b) == 1  # the healthy ledger replays first: only its own line
    assert ids(store_b) == {"b-0"}
    assert spent(store_b) == 7
    assert (len(spool_a), len(spool_b)) == (2, 0)
    assert not spool_b.pending()  # a's lines are not b's work
    assert spool_a.pending()

    assert spool_a.replay(store_a) == 2
    assert ids(store_a) == {"a-0", "a-1"}
    assert spent(store_a) == 200
    assert not spool_a.pending()
    assert not path.exists()
    assert not path.with_name(path.name + ".replaying").exists()


def test_every_line_carries_its_owner(path: Path) -> None:
    Spool(path, owner='ow"ner\\1').append(req("a-0"), mark=("conv", 60))
    Spool(path).append(req("old-0"))
    first, second = (json.loads(line) for line in path.read_text().splitlines())
    assert first["owner"] == 'ow"ner\\1'
    assert first["request_id"] == "a-0"
    assert "owner" not in second


def test_lines_without_an_owner_are_replayed_by_whoever_replays(
    path: Path, stores: tuple[SQLiteStore, SQLiteStore]
) -> None:
    store_a, store_b = stores
    with path.open("a") as f:  # as an older version wrote them
        f.write(json.dumps(asdict(req("old-0"))) + "\n")
    Spool(path, owner="a").append(req("a-0"))
    Spool(path).append(req("old-1"))  # a spool without an owner writes such lines too
    assert Spool(path, owner="b").replay(store_b) == 2
    assert ids(store_b) == {"old-0", "old-1"}
    assert Spool(path, owner="a").replay(store_a) == 1
    assert ids(store_a) == {"a-0"}


def test_a_spool_without_an_owner_leaves_owned_lines(
    path: Path, stores: tuple[SQLiteStore, SQLiteStore]
) -> None:
    store_a, store_b = stores
    Spool(path, owner="a").append(req("a-0"))
    Spool(path).append(req("old-0"))
    assert Spool(path).replay(store_b) == 1
    assert ids(store_b) == {"old-0"}
    assert Spool(path, owner="a").replay(store_a) == 1
    assert ids(store_a) == {"a-0"}


def test_other_owners_lines_keep_their_order_and_survive_a_store_gone_away(
    path: Path, stores: tuple[SQLiteStore, SQLiteStore], tmp_path: Path
) -> None:
    store_a, store_b = stores
    order = ["b-0", "a-0", "b-1", "a-1", "b-2"]
    for rid in order:
        Spool(path, owner=rid[0]).append(req(rid))
    slow = SQLiteStore(f"sqlite:///{tmp_path / 'a.db'}", timeout_s=0.05)
    lock = sqlite3.connect(tmp_path / "a.db", isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")  # store a is unavailable: its replay keeps everything
        assert Spool(path, owner="a").replay(slow) == 0
        lock.execute("ROLLBACK")
    finally:
        lock.close()
        slow.close()
    replaying = path.with_name(path.name + ".replaying")
    assert [json.loads(line)["request_id"] for line in replaying.read_text().splitlines()] == order
    assert Spool(path, owner="b").replay(store_b) == 3
    assert [json.loads(line)["request_id"] for line in replaying.read_text().splitlines()] == ["a-0", "a-1"]
    assert Spool(path, owner="a").replay(store_a) == 2
    assert (ids(store_a), ids(store_b)) == ({"a-0", "a-1"}, {"b-0", "b-1", "b-2"})


def test_a_hand_mended_line_is_read_by_its_owner_field(path: Path) -> None:
    store_a, store_b = MemoryStore(), MemoryStore()
    line = {**asdict(req("b-0")), "owner": "b"}  # owner last, spaces: not as append() writes it
    path.write_text(json.dumps(line) + "\n")
    assert Spool(path, owner="a").replay(store_a) == 0
    assert Spool(path, owner="b").replay(store_b) == 1
    assert (ids(store_a), ids(store_b)) == (set(), {"b-0"})


def test_a_line_with_a_bad_owner_is_quarantined(path: Path) -> None:
    path.write_text(json.dumps({"owner": 5, **asdict(req("x-0"))}) + "\n")
    store = MemoryStore()
    assert Spool(path, owner="a").replay(store) == 0
    (bad,) = [json.loads(line) for line in path.with_name(path.name + ".bad").read_text().splitlines()]
    assert bad["reason"] == "unreadable: ValueError: 'owner' is not a string"


def test_pending_notices_new_lines_after_a_replay_left_only_others(
    path: Path, stores: tuple[SQLiteStore, SQLiteStore]
) -> None:
    store_a, _ = stores
    spool_a, spool_b = Spool(path, owner="a"), Spool(path, owner="b")
    spool_b.append(req("b-0"))
    assert spool_a.pending()  # not looked at yet
    assert spool_a.replay(store_a) == 0
    assert not spool_a.pending()
    spool_b.append(req("b-1"))
    assert spool_a.pending()  # the spool changed: it may hold a's lines now
    assert spool_a.replay(store_a) == 0
    assert not spool_a.pending()
    Spool(path, owner="a").append(req("a-0"))  # another process of the same store
    assert spool_a.pending()
    assert spool_a.replay(store_a) == 1
    assert ids(store_a) == {"a-0"}


def test_lines_appended_while_a_replay_runs_are_kept_for_their_owners(
    path: Path, stores: tuple[SQLiteStore, SQLiteStore], tmp_path: Path
) -> None:
    store_a, store_b = stores
    spool_a = Spool(path, owner="a")
    for i in range(3):
        spool_a.append(req(f"a-{i}"))
    Spool(path, owner="b").append(req("b-0"))
    results: list[int] = []
    lock = sqlite3.connect(tmp_path / "a.db", isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # a's replay waits for the store: a slow store
    try:
        replay = threading.Thread(target=lambda: results.append(spool_a.replay(store_a)))
        replay.start()
        deadline = time.monotonic() + 3
        while not path.with_name(path.name + ".replaying").exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        appenders = [python(APPENDER, path, owner, 5) for owner in ("a", "b")]
        assert [p.wait(timeout=20) for p in appenders] == [0, 0]
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    replay.join(timeout=20)
    assert results == [3]
    assert spool_a.pending()  # its own appended lines wait in the fresh spool file
    assert spool_a.replay(store_a) == 2  # a-3, a-4 (a-0..a-4 of the child: a-0..2 already in)
    assert Spool(path, owner="b").replay(store_b) == 5  # b-0 (b-0 again: once), b-1..b-4
    assert ids(store_a) == {f"a-{i}" for i in range(5)}
    assert ids(store_b) == {f"b-{i}" for i in range(5)}
    assert not Spool(path, owner="a").pending()


def test_concurrent_owners_appending_and_replaying_each_get_exactly_their_lines(
    path: Path, stores: tuple[SQLiteStore, SQLiteStore], tmp_path: Path
) -> None:
    store_a, store_b = stores
    stop = tmp_path / "stop"
    replayers = [
        python(REPLAYER, path, owner, f"sqlite:///{tmp_path / f'{owner}.db'}", stop, stdout=subprocess.PIPE)
        for owner in ("a", "b")
    ]
    appenders = [python(APPENDER, path, owner, 150) for owner in ("a", "b")]
    try:
        assert [p.wait(timeout=60) for p in appenders] == [0, 0]
        stop.touch()
        applied = [int(p.communicate(timeout=30)[0].strip() or -1) for p in replayers]
    finally:
        for p in replayers + appenders:
            p.kill()
            p.communicate()
    assert applied == [150, 150]
    assert ids(store_a) == {f"a-{i}" for i in range(150)}
    assert ids(store_b) == {f"b-{i}" for i in range(150)}
    assert (spent(store_a), spent(store_b)) == (15_000, 15_000)
    assert not Spool(path, owner="a").pending()
    assert not Spool(path, owner="b").pending()


def test_owner_must_be_a_string(path: Path) -> None:
    with pytest.raises(InvalidInputError, match="owner"):
        Spool(path, owner=b"a")  # type: ignore[arg-type]
