"""A long outage's spool replayed a share at a time (``replay(most=...)``, as a ledger does once a
second on a caller's thread) costs each replay its share, not the whole file: the replay keeps a
cursor (``<spool>.replaying.offset``) of how far ``<spool>.replaying`` is settled and moves only
that, instead of reading and rewriting the file on every pass. Nothing is lost or counted twice
when a replay dies before it moves the cursor, a cursor that cannot be trusted is ignored (the
lines are re-sent, never skipped), other owners' lines stay in order for their own replays, and
``len()``, ``pending()`` and lines appended meanwhile agree with the cursor."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from tokenbudget_core.errors import BudgetUnavailableError
from tokenbudget_core.spool import Spool
from tokenbudget_core.stores.base import Check, CommitOutcome, CommitRequest
from tokenbudget_core.stores.memory import MemoryStore
from tokenbudget_core.stores.sqlite import SQLiteStore

DAY = "2026-11-23"
AMOUNT = 100


def req(rid: str) -> CommitRequest:
    return CommitRequest(
        day=DAY,
        request_id=rid,
        charges=[Check(scope="g", metric="nanos", amount=AMOUNT)],
        rollup_key="//" + rid,  # the request id as the model: which ids a store holds
        rollup={"requests": 1, "cost_nanos": AMOUNT},
        now_ms=0,
    )


def spent(store: MemoryStore | SQLiteStore) -> int:
    return store.totals(DAY, [("g", "nanos")], 0)[("g", "nanos")][0]


def ids(store: MemoryStore | SQLiteStore) -> list[str]:
    """The request ids the store was charged for, each once (a doubled commit would show)."""
    rows = store.rollup([DAY])
    assert all(row.values["requests"] == 1 for row in rows)
    return sorted(row.rollup_key.removeprefix("//") for row in rows)


def exactly_once(store: MemoryStore | SQLiteStore, rids: list[str]) -> None:
    assert ids(store) == sorted(rids)
    assert spent(store) == AMOUNT * len(rids)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "spool.jsonl"


@pytest.fixture
def fill(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path, str, list[str]], None]:
    """Append lines as :meth:`Spool.append` writes them, without an fsync per line (fast)."""

    def fill(path: Path, owner: str, rids: list[str]) -> None:
        spool = Spool(path, owner=owner)
        with monkeypatch.context() as m:
            m.setattr(os, "fsync", lambda fd: None)
            for rid in rids:
                spool.append(req(rid))

    return fill


def replaying(path: Path) -> Path:
    return path.with_name(path.name + ".replaying")


def cursor(path: Path) -> Path:
    return path.with_name(path.name + ".replaying.offset")


def stat(p: Path) -> tuple[int, int, int]:
    st = p.stat()
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def pending_ids(path: Path, owner: str | None = None) -> list[str]:
    """The request ids in ``<spool>.replaying`` after its cursor, in order (of ``owner``)."""
    start = json.loads(cursor(path).read_bytes())["offset"] if cursor(path).exists() else 0
    lines = [json.loads(line) for line in replaying(path).read_bytes()[start:].splitlines() if line]
    return [line["request_id"] for line in lines if owner is None or line.get("owner") == owner]


# -- (1) a partial replay moves the cursor, it does not rewrite the file ---------------------------


def test_a_large_spool_replayed_a_share_at_a_time_is_never_rewritten(
    path: Path, fill: Callable[[Path, str, list[str]], None]
) -> None:
    rids = [f"a-{i}" for i in range(5_000)]
    fill(path, "a", rids)
    spool, store = Spool(path, owner="a"), MemoryStore()
    assert spool.replay(store, most=100) == 100
    taken = stat(replaying(path))  # the spool file itself, moved aside: never copied
    applied = 100
    for done in range(200, 5_000, 100):
        assert spool.replay(store, most=100) == 100
        applied += 100
        # Only the cursor moved: the same file (inode), not a byte of it rewritten (size, mtime).
        assert stat(replaying(path)) == taken
        assert len(spool) == 5_000 - done
        assert spool.pending()
    assert spool.replay(store, most=100) == 100  # the last share: the files go
    applied += 100
    assert applied == 5_000
    assert not replaying(path).exists()
    assert not cursor(path).exists()
    assert not spool.pending()
    assert spool.replay(store, most=100) == 0
    exactly_once(store, rids)


def test_a_store_gone_away_mid_share_only_moves_the_cursor_to_the_line_it_refused(
    path: Path, fill: Callable[[Path, str, list[str]], None]
) -> None:
    class GoesAway(MemoryStore):
        budget = 0

        def commit(self, req: CommitRequest) -> CommitOutcome:
            if self.budget <= 0:
                raise BudgetUnavailableError("flaky://", "down")
            self.budget -= 1
            return super().commit(req)

    rids = [f"a-{i}" for i in range(500)]
    fill(path, "a", rids)
    spool, store = Spool(path, owner="a"), GoesAway()
    store.budget = 30
    assert spool.replay(store, most=100) == 30
    taken = stat(replaying(path))
    assert pending_ids(path) == rids[30:]
    store.budget = 42
    assert spool.replay(store, most=100) == 42
    assert stat(replaying(path)) == taken  # not rewritten: the line it refused stays as it is
    assert len(spool) == 500 - 72
    store.budget = 10_000
    assert spool.replay(store) == 500 - 72
    exactly_once(store, rids)


# -- (2) a replay dying before it moves the cursor re-sends, never loses -------------------------


def test_a_replay_failing_to_move_the_cursor_re_sends_its_share_counted_once(
    path: Path, fill: Callable[[Path, str, list[str]], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    rids = [f"a-{i}" for i in range(1_000)]
    fill(path, "a", rids)
    spool, store = Spool(path, owner="a"), MemoryStore()
    assert spool.replay(store, most=100) == 100

    def full_disk(*args: object) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:  # a full disk, or a kill: the cursor is not written
        m.setattr(Spool, "_write_cursor", full_disk)
        assert spool.replay(store, most=100) == 0  # logged, not raised; the commits are in
    exactly_once(store, rids[:200])
    assert len(spool) == 900  # the cursor did not move: lines 100-199 are sent again
    assert spool.replay(store, most=100) == 0  # ... and the store counts them once
    assert len(spool) == 800
    assert spool.replay(store) == 800
    exactly_once(store, rids)
    assert not replaying(path).exists()


def test_a_lost_cursor_re_sends_from_the_first_line_counted_once(
    path: Path, fill: Callable[[Path, str, list[str]], None], caplog: pytest.LogCaptureFixture
) -> None:
    rids = [f"a-{i}" for i in range(600)]
    fill(path, "a", rids)
    spool, store = Spool(path, owner="a"), MemoryStore()
    for _ in range(3):
        assert spool.replay(store, most=100) == 100
    cursor(path).unlink()  # a crash before the first cursor reached the disk
    assert len(spool) == 600
    with caplog.at_level(logging.WARNING, logger="tokenbudget.spool"):
        assert spool.replay(store, most=400) == 100  # 300 sent again (counted once), 100 new
    assert not caplog.records  # no cursor is the usual state of a file no replay has settled
    assert spool.replay(store) == 200
    exactly_once(store, rids)


KILLED_BEFORE_THE_SECOND_CURSOR = """
import os, signal, sys
from tokenbudget_core.spool import Spool
from tokenbudget_core.stores.sqlite import SQLiteStore

write_cursor = Spool._write_cursor
def dies_the_second_time(self, *args):
    if getattr(Spool, "written", False):
        os.kill(os.getpid(), signal.SIGKILL)  # the commits are in, the cursor is not moved
    Spool.written = True
    write_cursor(self, *args)

Spool._write_cursor = dies_the_second_time
spool, store = Spool(sys.argv[1], owner="a"), SQLiteStore(sys.argv[2])
while spool.replay(store, most=100):
    pass
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_replay_killed_between_its_commits_and_the_cursor_loses_nothing(
    path: Path, fill: Callable[[Path, str, list[str]], None], tmp_path: Path
) -> None:
    rids = [f"a-{i}" for i in range(400)]
    fill(path, "a", rids)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_BEFORE_THE_SECOND_CURSOR, str(path), url], check=False, timeout=120
    )
    assert killed.returncode == -signal.SIGKILL
    with closing(SQLiteStore(url)) as store:
        exactly_once(store, rids[:200])  # two shares committed, one cursor written
        spool = Spool(path, owner="a")
        assert len(spool) == 300
        assert spool.replay(store) == 200  # the second share again (counted once), then the rest
        exactly_once(store, rids)
    assert not replaying(path).exists()
    assert not cursor(path).exists()


# -- (3) a cursor that cannot be trusted is ignored, never skips a line ---------------------------


def _garbage(p: Path) -> None:
    p.write_bytes(b"\x00not json")


def _past_the_end(p: Path) -> None:
    record = json.loads(p.read_bytes())
    record["offset"] = replaying(p.with_name(p.name.removesuffix(".replaying.offset"))).stat().st_size + 10
    p.write_text(json.dumps(record))


def _into_a_line(p: Path) -> None:
    record = json.loads(p.read_bytes())
    record["offset"] += 7
    p.write_text(json.dumps(record))


def _bytes_changed(p: Path) -> None:
    target = replaying(p.with_name(p.name.removesuffix(".replaying.offset")))
    lines = target.read_bytes().splitlines(keepends=True)
    lines[98], lines[99] = lines[99], lines[98]  # just before the cursor; as long as before
    with target.open("r+b") as f:  # the same file (inode), its bytes before the cursor changed
        f.write(b"".join(lines))


def _another_file(p: Path) -> None:
    target = replaying(p.with_name(p.name.removesuffix(".replaying.offset")))
    copy = target.with_name("copy")
    copy.write_bytes(target.read_bytes())
    os.replace(copy, target)  # another inode, say the file of a replay the cursor outlived


@pytest.mark.parametrize(
    ("spoil", "problem"),
    [
        (_garbage, "is unreadable"),
        (_past_the_end, "points past the end"),
        (_into_a_line, "points into a line"),
        (_bytes_changed, "does not match the file's bytes"),
        (_another_file, "names another file"),
    ],
)
def test_a_cursor_that_cannot_be_trusted_is_logged_and_ignored(
    path: Path,
    fill: Callable[[Path, str, list[str]], None],
    caplog: pytest.LogCaptureFixture,
    spoil: Callable[[Path], None],
    problem: str,
) -> None:
    rids = [f"a-{i}" for i in range(300)]
    fill(path, "a", rids)
    spool, store = Spool(path, owner="a"), MemoryStore()
    assert spool.replay(store, most=100) == 100
    spoil(cursor(path))
    assert len(spool) >= 200  # counted from the first line: never fewer than are pending
    with caplog.at_level(logging.WARNING, logger="tokenbudget.spool"):
        assert spool.replay(store) == 200  # the first 100 sent again: counted once
    (message,) = [r.getMessage() for r in caplog.records if "cursor" in r.getMessage()]
    assert problem in message
    assert str(cursor(path)) in message
    exactly_once(store, rids)
    assert not replaying(path).exists()
    assert not cursor(path).exists()


def test_a_cursor_left_without_its_file_is_never_applied_to_a_new_one(
    path: Path, fill: Callable[[Path, str, list[str]], None]
) -> None:
    fill(path, "a", [f"a-{i}" for i in range(300)])
    spool, store = Spool(path, owner="a"), MemoryStore()
    assert spool.replay(store, most=100) == 100
    stale = cursor(path).read_bytes()
    assert spool.replay(store) == 200
    cursor(path).write_bytes(stale)  # a replay killed between removing the file and its cursor
    fill(path, "a", [f"b-{i}" for i in range(300)])
    assert len(spool) == 300
    assert spool.replay(store, most=100) == 100  # b-0..b-99: not skipped by the old cursor
    assert spool.replay(store) == 200
    exactly_once(store, [f"{p}-{i}" for p in "ab" for i in range(300)])


# -- (4) other owners' lines stay, in order, for their own replays -------------------------------


def test_other_owners_lines_interleaved_stay_in_order_for_their_own_replay(
    path: Path, fill: Callable[[Path, str, list[str]], None]
) -> None:
    order: list[tuple[str, str]] = []
    for i in range(300):
        order.append(("a", f"a-{i}"))
        if i % 3 == 0:
            order.append(("b", f"b-{i}"))
    for owner, rid in order:
        fill(path, owner, [rid])
    b_rids = [rid for owner, rid in order if owner == "b"]
    a_rids = [rid for owner, rid in order if owner == "a"]
    spool_a, spool_b = Spool(path, owner="a"), Spool(path, owner="b")
    store_a, store_b = MemoryStore(), MemoryStore()
    for done in range(50, 300, 50):
        assert spool_a.replay(store_a, most=50) == 50
        assert pending_ids(path, "b") == b_rids  # every b line, in order
        assert len(spool_b) == len(b_rids)
        assert len(spool_a) == 300 - done
    assert spool_a.replay(store_a, most=50) == 50
    assert not spool_a.pending()  # only b's lines are left
    assert pending_ids(path) == b_rids
    seen: list[str] = []
    assert spool_b.replay(store_b, on_applied=lambda r, o: seen.append(r.request_id), most=40) == 40
    assert spool_b.replay(store_b, on_applied=lambda r, o: seen.append(r.request_id)) == len(b_rids) - 40
    assert seen == b_rids  # in the order they were spooled
    exactly_once(store_a, a_rids)
    exactly_once(store_b, b_rids)
    assert not replaying(path).exists()
    assert not cursor(path).exists()


def test_other_owners_lines_after_ours_do_not_make_a_replay_rewrite_the_file(
    path: Path, fill: Callable[[Path, str, list[str]], None]
) -> None:
    a_rids, b_rids = [f"a-{i}" for i in range(1_000)], [f"b-{i}" for i in range(50)]
    fill(path, "a", a_rids)
    fill(path, "b", b_rids)
    spool_a, store_a = Spool(path, owner="a"), MemoryStore()
    assert spool_a.replay(store_a, most=100) == 100
    taken = stat(replaying(path))
    while spool_a.replay(store_a, most=100):
        assert stat(replaying(path)) == taken
    assert stat(replaying(path)) == taken  # b's lines at the end: the cursor stops before them
    assert not spool_a.pending()
    assert pending_ids(path) == b_rids
    store_b = MemoryStore()
    assert Spool(path, owner="b").replay(store_b, most=30) == 30
    assert Spool(path, owner="b").replay(store_b) == 20
    exactly_once(store_a, a_rids)
    exactly_once(store_b, b_rids)
    assert not replaying(path).exists()


# -- (5) len() and pending() agree with the cursor -----------------------------------------------


def test_len_and_pending_count_only_lines_after_the_cursor(
    path: Path, fill: Callable[[Path, str, list[str]], None]
) -> None:
    rids = [f"a-{i}" for i in range(250)]
    fill(path, "a", rids)
    spool, store = Spool(path, owner="a"), MemoryStore()
    assert (len(spool), spool.pending()) == (250, True)
    for left in (150, 50):
        assert spool.replay(store, most=100) == 100
        assert (len(spool), spool.pending()) == (left, True)
        again = Spool(path, owner="a")  # another process of the same store
        assert (len(again), again.pending()) == (left, True)
        assert len(Spool(path, owner="b")) == 0
    assert spool.replay(store, most=100) == 50
    assert (len(spool), spool.pending()) == (0, False)
    exactly_once(store, rids)


# -- (6) lines appended while a cursor is kept are replayed too ------------------------------------


def test_lines_appended_after_a_partial_replay_are_added_after_the_cursor(
    path: Path, fill: Callable[[Path, str, list[str]], None]
) -> None:
    old, new = [f"a-{i}" for i in range(300)], [f"n-{i}" for i in range(50)]
    fill(path, "a", old)
    spool, store = Spool(path, owner="a"), MemoryStore()
    assert spool.replay(store, most=100) == 100
    ino = replaying(path).stat().st_ino
    fill(path, "a", new)  # the store is back, then down again: appended to the spool file
    spool.append(req("n-50"))  # and one with its fsync
    new.append("n-50")
    assert len(spool) == 200 + 51
    assert spool.replay(store, most=100) == 100  # takes the new lines after the old, the cursor kept
    assert replaying(path).stat().st_ino == ino  # appended to the same file: not rewritten
    assert not path.exists()
    assert pending_ids(path) == old[200:] + new
    assert len(spool) == 100 + 51
    assert spool.replay(store, most=120) == 120
    assert pending_ids(path) == new[20:]
    assert spool.replay(store) == 31
    exactly_once(store, old + new)
    assert not spool.pending()
    assert not replaying(path).exists()
    assert not cursor(path).exists()
