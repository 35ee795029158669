"""Review D of the response-cache stores (memory://, sqlite://): the findings fixed in the stores.

1. SQLite semantic search read payloads by rowid only: after another process invalidated and
   re-stored, a reused rowid served another partition's answer; ``SemanticCache`` now also skips
   an entry filed under another partition.
2. A process forked while another thread held a store's lock hung in its first cache call.
5. SQLite raised a bare UnicodeEncodeError on text with a lone surrogate.
6. memory://: every add dropped the partition's matrix, so the next search re-stacked every row.
8. memory:// kept every scope it ever saw (memory grew past ``max_entries``).
10. Store options were not checked (bare TypeError; ``timeout_s=-1`` silently broke writes).
11. memory:// ``get`` deleted a fresh entry stored over an expired one meanwhile.
12. SQLite kept a ``versions`` row for every partition ever seen, even after ``clear()``.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cache_contract import Clock, unit
from fork_support import run_in_fork
from tokenbudget_core import CachedResponse, CacheRequest, CacheScope, ExactCache, SemanticCache, Usage
from tokenbudget_core.cache_stores import CacheStore, VectorMatch, open_cache_store
from tokenbudget_core.cache_stores import sqlite as sqlite_cache_store
from tokenbudget_core.cache_stores.memory import MemoryCacheStore, VectorBucket, check_vector, top_k
from tokenbudget_core.cache_stores.sqlite import SQLiteCacheStore
from tokenbudget_core.errors import CacheUnavailableError, InvalidInputError
from tokenbudget_core.messages import Message

A = CacheScope(tenant="acme")


def _request(system: str, text: str = "Say hello to the new customer.") -> CacheRequest:
    return CacheRequest(
        model="gpt-4o",
        messages=(Message(role="system", content=system), Message(role="user", content=text)),
        params={"temperature": 0},
    )


def _answer(text: str) -> CachedResponse:
    return CachedResponse(content=text, model="gpt-4o", usage=Usage(input_tokens=10, output_tokens=3))


ENGLISH, FRENCH = _request("Always answer in English."), _request("Always answer in French.")


# -- 1. another partition's answer is never served ---------------------------------------------------


def test_sqlite_search_never_serves_another_partitions_answer_through_a_reused_rowid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two caches on one file stand for two processes. Process 2 invalidates the tenant and stores
    # the French answer (another partition) while process 1's search sits between reading its
    # matrix and reading the payloads: SQLite gives the freed rowid to the French row.
    url = f"sqlite:///{tmp_path}/c.db"
    one, two = SemanticCache(url), SemanticCache(url)
    one.store(ENGLISH, _answer("Hello and welcome!"), scope=A)
    hit = one.lookup(ENGLISH, scope=A)
    assert hit is not None
    assert hit.response.content == "Hello and welcome!"

    real_top_k = sqlite_cache_store.top_k

    def interleaved(scores: Any, k: int) -> list[int]:
        monkeypatch.setattr(sqlite_cache_store, "top_k", real_top_k)
        two.invalidate(A)
        two.store(FRENCH, _answer("Bonjour et bienvenue !"), scope=A)
        return real_top_k(scores, k)

    monkeypatch.setattr(sqlite_cache_store, "top_k", interleaved)
    hit = one.lookup(ENGLISH, scope=A)
    # (the search read one state of the file: the English entry, still there when it began)
    assert hit is None or hit.response.content == "Hello and welcome!"
    assert one.lookup(ENGLISH, scope=A) is None  # invalidated since
    french = one.lookup(FRENCH, scope=A)
    assert french is not None
    assert french.response.content == "Bonjour et bienvenue !"


def test_sqlite_payloads_are_read_from_the_searched_partition_only(tmp_path: Path) -> None:
    # The rowids of a partition's matrix, then a row of another partition under one of them: its
    # payload is not returned (the search's own snapshot is bypassed by reading ids directly).
    store = SQLiteCacheStore(f"sqlite:///{tmp_path}/c.db", clock=Clock())
    store.add_vector(A, "english", "k", unit(1, 0), "english answer", 60)
    assert [m.payload for m in store.search(A, "english", unit(1, 0), 3)] == ["english answer"]
    raw = sqlite3.connect(f"{tmp_path}/c.db", isolation_level=None)
    raw.execute("UPDATE vectors SET part = 'french', payload = 'french answer'")  # same rowid
    assert store.search(A, "english", unit(1, 0), 3) == []
    raw.close()
    store.close()


class _EveryPartition(MemoryCacheStore):
    """A faulty store: its search returns the scope's vectors of every partition."""

    def search(self, scope: CacheScope, partition: str, vector: Any, k: int) -> list[VectorMatch]:
        found: list[VectorMatch] = []
        for (sk, _), bucket in list(self._buckets.items()):
            if sk == scope.key():
                found += bucket.search(check_vector(vector), k, self.clock())
        return sorted(found, key=lambda m: -m.score)[:k]


def test_semantic_cache_skips_an_entry_of_another_partition_a_store_returns() -> None:
    cache = SemanticCache(_EveryPartition())
    assert cache.store(FRENCH, _answer("Bonjour et bienvenue !"), scope=A)
    assert cache.lookup(ENGLISH, scope=A) is None
    hit = cache.lookup(FRENCH, scope=A)
    assert hit is not None
    assert hit.response.content == "Bonjour et bienvenue !"


async def test_semantic_cache_async_lookup_skips_an_entry_of_another_partition() -> None:
    cache = SemanticCache(_EveryPartition())
    assert await cache.astore(FRENCH, _answer("Bonjour et bienvenue !"), scope=A)
    assert await cache.alookup(ENGLISH, scope=A) is None


# -- 2. a process forked while another thread holds a store's lock -----------------------------------


class _WatchedLock:
    """A store's lock that tells when a caller other than its first holder waits for it."""

    def __init__(self) -> None:
        self.inner = threading.Lock()
        self.wanted = threading.Event()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        self.wanted.set()
        return self.inner.acquire(blocking, timeout)

    def release(self) -> None:
        self.inner.release()

    def locked(self) -> bool:
        return self.inner.locked()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _hold_until_wanted(lock: _WatchedLock, until: threading.Event) -> threading.Thread:
    """A thread of this process holding ``lock`` (as a cache call would) until another caller (a
    fork) waits for it, or the test (``until``) lets go."""
    held = threading.Event()

    def hold() -> None:
        with lock.inner:
            held.set()
            while not (lock.wanted.is_set() or until.is_set()):
                lock.wanted.wait(0.01)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert held.wait(30)
    return thread


def _stores() -> list[tuple[str, Callable[[Path], CacheStore]]]:
    return [
        ("memory", lambda _: MemoryCacheStore()),
        ("sqlite", lambda tmp: SQLiteCacheStore(f"sqlite:///{tmp}/c.db")),
    ]


@pytest.mark.parametrize(("name", "make"), _stores(), ids=[n for n, _ in _stores()])
def test_a_process_forked_while_a_thread_holds_the_store_lock_completes_its_lookups(
    tmp_path: Path, name: str, make: Callable[[Path], CacheStore]
) -> None:
    store = make(tmp_path)
    exact, semantic = ExactCache(store), SemanticCache(store)
    assert exact.store(ENGLISH, _answer("exact answer"), scope=A)
    assert semantic.store(ENGLISH, _answer("semantic answer"), scope=A)
    assert semantic.lookup(ENGLISH, scope=A) is not None  # (SQLite: the partition is read)
    watched = _WatchedLock()
    store._lock = watched  # type: ignore[attr-defined]
    done = threading.Event()

    def child() -> None:  # (with the parent's lock, held for good here, it hangs and is killed)
        hit = semantic.lookup(ENGLISH, scope=A)
        assert hit is not None
        assert hit.response.content == "semantic answer"
        assert exact.store(FRENCH, _answer("stored in the child"), scope=A)
        found = exact.lookup(FRENCH, scope=A)
        assert found is not None
        assert found.response.content == "stored in the child"

    thread = _hold_until_wanted(watched, done)
    try:
        assert run_in_fork(child, timeout_s=30) == 0  # a hang is killed and fails here
    finally:
        done.set()
        thread.join(30)
    hit = semantic.lookup(ENGLISH, scope=A)  # the parent goes on
    assert hit is not None
    assert hit.response.content == "semantic answer"


def test_a_process_forked_without_the_sqlite_store_lock_gets_its_own_lock_and_connection(
    tmp_path: Path,
) -> None:
    # The lock stays held through the fork (the fork gives up waiting for it after about
    # timeout_s): the child still gets a lock and a connection of its own, and no partition read
    # by the parent.
    store = SQLiteCacheStore(f"sqlite:///{tmp_path}/c.db", timeout_s=0.2)
    semantic = SemanticCache(store)
    assert semantic.store(ENGLISH, _answer("semantic answer"), scope=A)
    assert semantic.lookup(ENGLISH, scope=A) is not None
    parents = store._conn
    release = threading.Event()
    held = threading.Event()

    def hold() -> None:
        with store._lock:
            held.set()
            release.wait(60)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert held.wait(30)

    read = list(store._partitions.values())  # what the parent read of the partition

    def child() -> None:
        hit = semantic.lookup(ENGLISH, scope=A)
        assert hit is not None
        assert hit.response.content == "semantic answer"
        assert store._conn is not None
        assert store._conn is not parents
        assert not any(p is q for p in store._partitions.values() for q in read)  # read again

    try:
        assert run_in_fork(child, timeout_s=30) == 0
    finally:
        release.set()
        thread.join(30)
    assert store._conn is parents  # the parent's is untouched


# -- 5. text with a lone surrogate -----------------------------------------------------------------


SURROGATE = CacheRequest.from_text(model="gpt-4o", prompt="Translate: caf\ud83d", params={"temperature": 0})


@pytest.mark.parametrize("kind", [ExactCache, SemanticCache])
def test_sqlite_stores_and_serves_a_prompt_with_a_lone_surrogate(tmp_path: Path, kind: type) -> None:
    cache = kind(f"sqlite:///{tmp_path}/c.db")
    assert cache.store(SURROGATE, _answer("caf\udc3d ok"), scope=A) is True
    hit = cache.lookup(SURROGATE, scope=A)
    assert hit is not None
    assert hit.response.content == "caf\udc3d ok"
    other = kind(f"sqlite:///{tmp_path}/c.db")  # another process reads it back too
    hit = other.lookup(SURROGATE, scope=A)
    assert hit is not None
    assert hit.response.content == "caf\udc3d ok"


def test_sqlite_store_keeps_payloads_with_lone_surrogates_as_they_are(tmp_path: Path) -> None:
    store = SQLiteCacheStore(f"sqlite:///{tmp_path}/c.db", clock=Clock())
    store.put(A, "k", '{"a": "caf\ud83d"}', 60)
    store.add_vector(A, "p", "k", unit(1, 0), '{"b": "\udfff"}', 60)
    store.put(A, "plain", '{"a": "café"}', 60)
    assert store.get(A, "k") == '{"a": "caf\ud83d"}'
    assert [m.payload for m in store.search(A, "p", unit(1, 0), 3)] == ['{"b": "\udfff"}']
    assert store.get(A, "plain") == '{"a": "café"}'
    store.close()


def test_sqlite_text_it_cannot_bind_is_an_unavailable_store_not_a_bare_unicode_error(
    tmp_path: Path,
) -> None:
    store = SQLiteCacheStore(f"sqlite:///{tmp_path}/c.db")
    with pytest.raises(CacheUnavailableError):
        store.get(A, "caf\ud83d")  # (the caches' keys are digests; a direct caller's key)
    with pytest.raises(CacheUnavailableError):
        store.put(A, "caf\ud83d", "{}", 60)
    store.put(A, "k", "{}", 60)  # the store goes on
    assert store.get(A, "k") == "{}"
    store.close()


# -- 6. memory://: a search after an add does not re-stack the partition -----------------------------


def test_memory_add_writes_into_the_partition_matrix_instead_of_dropping_it() -> None:
    store = MemoryCacheStore()
    rng = np.random.default_rng(3)
    rows = rng.standard_normal((1_000, 32)).astype(np.float32)
    for i, row in enumerate(rows):
        store.add_vector(A, "p", f"k{i}", row / np.linalg.norm(row), "{}", 60)
    store.search(A, "p", unit(*rows[0]), 4)
    bucket = store._buckets[(A.key(), "p")]
    matrices = []  # (kept alive: a new matrix could not reuse the id of one dropped)
    for i in range(50):
        store.add_vector(A, "p", f"new{i}", unit(*rows[i]), "{}", 60)
        assert store.search(A, "p", unit(*rows[i]), 1)[0].key in (f"k{i}", f"new{i}")
        matrices.append(bucket._matrix)
    # the 1,050 rows fit in one doubling: at most one new matrix, not one per add
    assert len({id(m) for m in matrices}) <= 2


def test_memory_partition_search_matches_a_search_of_the_same_entries_stacked_afresh() -> None:
    rng = np.random.default_rng(11)
    bucket = VectorBucket()
    model: dict[str, tuple[np.ndarray, str, float]] = {}  # the entries, in insertion order
    now = 1_000.0

    def expected(query: np.ndarray, k: int) -> list[tuple[str, str, float]]:
        keys = list(model)
        matrix = np.vstack([model[key][0] for key in keys])
        scores = matrix @ query
        scores[np.asarray([model[key][2] for key in keys]) <= now] = -np.inf
        return [
            (keys[i], model[keys[i]][1], float(scores[i])) for i in top_k(scores, k) if scores[i] > -np.inf
        ]

    for step in range(3_000):
        key = f"k{int(rng.integers(0, 1_200))}"
        row = rng.standard_normal(24).astype(np.float32)
        row /= np.linalg.norm(row)
        expires = now + float(rng.uniform(-100, 400))  # some already expired
        bucket.add(key, row, f"p{step}", expires)
        model[key] = (row, f"p{step}", expires)  # (an overwrite keeps its place)
        if step % 400 == 399:  # time passes; drop expired rows when at least half are
            now += 150
            before = len(bucket.keys)
            bucket.prune(now)
            if len(bucket.keys) != before:
                model = {k: v for k, v in model.items() if v[2] > now}
        assert len(bucket.keys) == len(model)
        if step % 37 == 0:
            query = rng.standard_normal(24).astype(np.float32)
            query /= np.linalg.norm(query)
            got = [(m.key, m.payload, m.score) for m in bucket.search(query, 5, now)]
            want = expected(query, 5)
            assert [g[:2] for g in got] == [w[:2] for w in want]
            assert np.allclose([g[2] for g in got], [w[2] for w in want], rtol=1e-5, atol=1e-6)


# -- 8. memory://: scopes are forgotten with their last entry ----------------------------------------


def test_memory_store_forgets_the_scopes_of_evicted_entries() -> None:
    store = MemoryCacheStore(max_entries=100)
    cache = ExactCache(store)
    request = CacheRequest.from_text(model="gpt-4o", prompt="hi", params={"temperature": 0})
    for n in range(5_000):
        assert cache.store(request, _answer("hello"), scope=CacheScope(tenant="acme", user=f"user-{n}"))
    assert len(store._exact) == 100
    assert len(store._scopes) <= 100
    # the scopes still held are the ones with entries: invalidate still finds them
    assert store.invalidate(CacheScope(tenant="acme")) == 100
    assert not store._scopes


def test_memory_store_forgets_the_scopes_of_swept_partitions() -> None:
    clock = Clock()
    store = MemoryCacheStore(max_entries=100, clock=clock)
    for n in range(5_000):
        store.add_vector(CacheScope(tenant="acme", user=f"user-{n}"), "p", "k", unit(1, 0), "{}", 60)
    assert len(store._scopes) <= 100 + 1_024  # (swept every 1,024 adds)
    clock.now += 61
    store.add_vector(A, "q", "k", unit(1, 0), "{}", 60)
    for _ in range(1_100):
        store.add_vector(A, "q", "k", unit(1, 0), "{}", 60)  # expired partitions swept
    assert set(store._scopes) == {A.key()}


def test_memory_store_keeps_a_scope_while_it_has_entries() -> None:
    clock = Clock()
    store = MemoryCacheStore(max_entries=3, clock=clock)
    store.put(A, "a", "1", 60)
    store.put(A, "a", "2", 60)  # (an overwrite is not a second entry)
    store.add_vector(A, "p", "k", unit(1, 0), "v", 60)
    store.put(CacheScope(tenant="other"), "x", "1", 60)
    store.put(CacheScope(tenant="other"), "y", "1", 60)
    store.put(CacheScope(tenant="other"), "z", "1", 60)  # evicts A's exact entry
    assert A.key() in store._scopes  # its partition is still there
    assert store.invalidate(A) == 1
    clock.now += 61
    for key in ("x", "y", "z"):
        assert store.get(CacheScope(tenant="other"), key) is None  # expired, dropped
    assert not store._scopes


# -- 10. store options -----------------------------------------------------------------------------


@pytest.mark.parametrize("timeout_s", ["10", None, -1, 0, math.nan, math.inf, True, 10**9])
def test_sqlite_store_refuses_a_bad_timeout(tmp_path: Path, timeout_s: object) -> None:
    with pytest.raises(InvalidInputError) as e:
        SQLiteCacheStore(f"sqlite:///{tmp_path}/c.db", timeout_s=timeout_s)  # type: ignore[arg-type]
    assert e.value.field == "timeout_s"
    assert e.value.fix
    with pytest.raises(InvalidInputError):
        open_cache_store(f"sqlite:///{tmp_path}/c.db", timeout_s=timeout_s)


@pytest.mark.parametrize("clock", [5, None, "now"])
def test_stores_refuse_a_clock_that_is_not_callable(tmp_path: Path, clock: object) -> None:
    for make in (
        lambda: MemoryCacheStore(clock=clock),  # type: ignore[arg-type]
        lambda: SQLiteCacheStore(f"sqlite:///{tmp_path}/c.db", clock=clock),  # type: ignore[arg-type]
        lambda: open_cache_store("memory://", clock=clock),
        lambda: open_cache_store(f"sqlite:///{tmp_path}/c.db", clock=clock),
    ):
        with pytest.raises(InvalidInputError) as e:
            make()
        assert e.value.field == "clock"


def test_open_cache_store_refuses_an_option_the_store_does_not_take(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as e:
        open_cache_store("memory://", max_entrys=5)
    assert e.value.field == "max_entrys"
    assert "max_entries" in str(e.value.fix)
    with pytest.raises(InvalidInputError) as e:
        open_cache_store(f"sqlite:///{tmp_path}/c.db", max_entries=5)
    assert e.value.field == "max_entries"
    assert "timeout_s" in str(e.value.fix)
    with pytest.raises(InvalidInputError) as e:
        open_cache_store("redis://localhost:6379/0", timeout_s=5)
    assert e.value.field == "timeout_s"
    assert "socket_timeout" in str(e.value.fix)
    # the options each store does take still pass
    assert open_cache_store("memory://", max_entries=5, clock=Clock()).max_entries == 5  # type: ignore[attr-defined]
    store = open_cache_store(f"sqlite:///{tmp_path}/c.db", timeout_s=2, clock=Clock())
    assert store._timeout_s == 2  # type: ignore[attr-defined]
    store.close()


# -- 11. memory://: get never deletes a fresh entry ----------------------------------------------------


def test_memory_get_of_an_expired_entry_keeps_a_fresh_one_stored_meanwhile() -> None:
    now = [1_000.0]
    meanwhile: list[Callable[[], None]] = []

    def clock() -> float:  # get calls it between reading the entry and deleting it
        while meanwhile:
            other = threading.Thread(target=meanwhile.pop())
            other.start()
            other.join()
        return now[0]

    store = MemoryCacheStore(clock=clock)
    store.put(A, "k", "old answer", 10)
    now[0] = 1_011.0  # expired
    meanwhile.append(lambda: store.put(A, "k", "fresh answer", 3_600))  # another thread refreshes it
    assert store.get(A, "k") is None  # (the entry it read had expired)
    assert store.get(A, "k") == "fresh answer"
    assert A.key() in store._scopes


# -- 12. SQLite: no version row outlives its partition's vectors -------------------------------------


def _versions(path: Path) -> int:
    raw = sqlite3.connect(path)
    try:
        return int(raw.execute("SELECT count(*) FROM versions").fetchone()[0])
    finally:
        raw.close()


def test_sqlite_version_rows_go_with_their_partitions_vectors(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    clock = Clock()
    store = SQLiteCacheStore(f"sqlite:///{path}", clock=clock)
    for n in range(300):  # one partition per conversation
        store.add_vector(A, f"conversation-{n}", "k", unit(1, 0), "{}", 60)
        clock.now += 1.0  # entries expire after 60 s; writes purge them (every 60 s)
    assert _versions(path) <= 130  # the partitions with live vectors (plus up to 60 s of expired)
    store.invalidate(CacheScope(tenant="acme", user="nobody"))  # (nothing of its)
    store.invalidate(A)
    assert _versions(path) == 0
    for n in range(50):
        store.add_vector(CacheScope(tenant="t", user=f"u{n}"), "p", "k", unit(1, 0), "{}", 60)
    store.clear()
    assert _versions(path) == 0
    store.close()


def test_sqlite_clear_through_the_semantic_cache_leaves_no_version_rows(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    now = [1_000_000.0]
    cache = SemanticCache(f"sqlite:///{path}", ttl=60, clock=lambda: now[0])
    cache.store_backend.clock = lambda: now[0]  # type: ignore[attr-defined]
    for conv in range(200):
        request = CacheRequest(
            model="gpt-4o",
            params={"temperature": 0},
            messages=(
                Message(role="user", content=f"Hi, I am customer {conv}"),
                Message(role="assistant", content="Hello!"),
                Message(role="user", content="What are your opening hours?"),
            ),
        )
        cache.store(request, _answer("ok"), scope=A)
        now[0] += 1.0
    cache.clear()
    assert _versions(path) == 0


def test_a_process_that_read_a_partition_reloads_it_after_its_version_row_went(tmp_path: Path) -> None:
    # Process one reads partition p; process two empties it (its version row goes), then stores
    # other entries there, under the same rowids, and replaces them: one never scores the new rows
    # with the vectors it read before.
    url = f"sqlite:///{tmp_path}/c.db"
    clock = Clock()
    one, two = SQLiteCacheStore(url, clock=clock), SQLiteCacheStore(url, clock=clock)
    x, y = unit(1, 0), unit(0, 1)
    for emptied in (lambda: two.invalidate(A), two.clear):
        one.add_vector(A, "p", "x", x, "x", 60)
        assert [(m.key, m.payload) for m in one.search(A, "p", x, 3)] == [("x", "x")]
        emptied()
        for payload in ("y1", "y2", "y3"):  # (replaced: each a new version)
            two.add_vector(A, "p", "y", y, payload, 60)
        found = one.search(A, "p", x, 3)
        assert [(m.key, m.payload) for m in found] == [("y", "y3")]
        assert found[0].score == pytest.approx(0.0, abs=1e-6)  # y's vector, not x's
        two.invalidate(A)


def test_a_partition_an_older_release_left_without_version_row_is_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    clock = Clock()
    one, two = (
        SQLiteCacheStore(f"sqlite:///{path}", clock=clock),
        SQLiteCacheStore(f"sqlite:///{path}", clock=clock),
    )
    one.add_vector(A, "p", "x", unit(1, 0), "x", 60)
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("DELETE FROM versions")  # as an older release wrote it: vectors, no version row
    raw.close()
    assert [m.key for m in one.search(A, "p", unit(1, 0), 3)] == ["x"]  # read at "no version"
    two.invalidate(A)
    two.add_vector(A, "p", "y", unit(0, 1), "y", 60)  # (the rowid x had)
    found = one.search(A, "p", unit(1, 0), 3)
    assert [(m.key, m.payload) for m in found] == [("y", "y")]
    assert found[0].score == pytest.approx(0.0, abs=1e-6)
