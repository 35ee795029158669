"""Cache stores, review s30 (caches findings 1, 3, 6 and 7).

- 1: ``memory://``: a partition that alone holds more than ``max_entries`` vectors loses its
  oldest rows at the sweep, not every row: the newest ``max_entries`` stay.
- 3: ``sqlite://``: a row that cannot be read back (a payload that is not UTF-8, a vector blob
  that is not whole float32s of the partition's size) is an unreadable entry, skipped and
  logged, never a bare ``UnicodeDecodeError`` / ``ValueError`` out of a lookup.
- 6: a Redis cache URL with a malformed IPv6 host is a named ``InvalidInputError``.
- 7: ``memory://?max_entries=2`` is refused by name (it was an unbounded store); the SQLite
  cache URL's query refusal gives the cache's advice, not the ledger's.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from cache_contract import A, B, Clock, answer, ask
from tokenbudget_core.cache_keys import CacheScope
from tokenbudget_core.cache_stores import open_cache_store
from tokenbudget_core.cache_stores.memory import MemoryCacheStore
from tokenbudget_core.cache_stores.sqlite import SQLiteCacheStore
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.response_cache import ExactCache
from tokenbudget_core.semantic_cache import SemanticCache
from tokenbudget_core.stores.sqlite import SQLiteStore

# -- 1. memory://: the newest max_entries vectors stay ---------------------------------------------


def _vectors(n: int, dims: int = 32, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, dims)).astype(np.float32)
    unit: np.ndarray = v / np.linalg.norm(v, axis=1, keepdims=True)
    return unit


def _best(store: MemoryCacheStore, scope: CacheScope, partition: str, vector: np.ndarray) -> str | None:
    found = store.search(scope, partition, vector, 1)
    return found[0].key if found and found[0].score > 0.999 else None


def test_one_partition_past_max_entries_keeps_its_newest_entries() -> None:
    """The reviewer's case: 1,024 adds into one partition with max_entries=1000 left 0 vectors."""
    store = MemoryCacheStore(max_entries=1000, clock=Clock())
    vectors = _vectors(1024)
    for i, v in enumerate(vectors):  # the sweep runs at the 1,024th add
        store.add_vector(A, "faq", f"k{i}", v, f"p{i}", 3600)
    assert _best(store, A, "faq", vectors[1023]) == "k1023"  # the entry stored last
    assert _best(store, A, "faq", vectors[24]) == "k24"  # the oldest kept
    assert all(_best(store, A, "faq", vectors[i]) is None for i in range(24))  # the oldest evicted
    assert store.invalidate(A) == 1000


def test_older_partitions_go_first_then_the_oldest_rows_of_the_next() -> None:
    store = MemoryCacheStore(max_entries=500, clock=Clock())
    vectors = _vectors(1024)
    for i in range(100):  # the oldest partition, in another scope
        store.add_vector(B, "old", f"o{i}", vectors[i], "p", 3600)
    for i in range(100, 1024):
        store.add_vector(A, "new", f"n{i}", vectors[i], "p", 3600)
    assert store.search(B, "old", vectors[0], 5) == []  # dropped whole (and its scope forgotten)
    assert store.invalidate(B) == 0
    assert _best(store, A, "new", vectors[1023]) == "n1023"
    assert _best(store, A, "new", vectors[524]) == "n524"  # the newest 500 of 924
    assert _best(store, A, "new", vectors[523]) is None
    assert store.invalidate(A) == 500


def test_a_partition_trimmed_in_part_takes_new_entries_and_overwrites() -> None:
    store = MemoryCacheStore(max_entries=1000, clock=Clock())
    vectors = _vectors(1030)
    for i in range(1024):
        store.add_vector(A, "faq", f"k{i}", vectors[i], f"p{i}", 3600)
    store.add_vector(A, "faq", "k500", vectors[1029], "again", 3600)  # an overwrite after the trim
    store.add_vector(A, "faq", "k2000", vectors[1025], "new", 3600)
    assert store.search(A, "faq", vectors[1029], 1)[0][1:] == ("k500", "again")
    assert store.search(A, "faq", vectors[1025], 1)[0][1:] == ("k2000", "new")
    assert _best(store, A, "faq", vectors[500]) is None  # its old vector is gone
    assert store.invalidate(A) == 1001


# -- 3. sqlite://: an unreadable row is a logged miss ------------------------------------------------


def _sql(path: Path, statement: str) -> None:
    db = sqlite3.connect(path)
    try:
        db.execute(statement)
        db.commit()
    finally:
        db.close()


def test_an_exact_payload_that_is_not_utf8_is_a_logged_miss(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.db"
    cache = ExactCache(f"sqlite:///{path}")
    assert cache.store(ask("What is a token?"), answer("A piece of text."), scope=A)
    _sql(path, "UPDATE exact SET payload = CAST(X'7B2276223A31E4B8' AS BLOB)")  # '{"v":1' + half a char
    with caplog.at_level(logging.WARNING, logger="tokenbudget.cache"):
        assert cache.lookup(ask("What is a token?"), scope=A) is None
    assert "unreadable cache entry" in caplog.text
    store = SQLiteCacheStore(f"sqlite:///{path}")
    assert store.get(A, next(iter(_keys(path)))) is None
    store.close()


def _keys(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return [str(r[0]) for r in db.execute("SELECT key FROM exact")]
    finally:
        db.close()


async def test_an_exact_payload_that_is_not_utf8_is_a_miss_async(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    cache = ExactCache(f"sqlite:///{path}")
    assert await cache.astore(ask("What is a token?"), answer("A piece of text."), scope=A)
    _sql(path, "UPDATE exact SET payload = CAST(X'7B2276223A31E4B8' AS BLOB)")
    assert await cache.alookup(ask("What is a token?"), scope=A) is None


def test_a_semantic_lookup_over_a_truncated_vector_blob_is_a_miss(tmp_path: Path) -> None:
    """The reviewer's case: every semantic lookup of the partition raised a bare ValueError."""
    path = tmp_path / "c.db"
    cache = SemanticCache(f"sqlite:///{path}", threshold=0.9)
    assert cache.store(ask("What is a token?"), answer("A piece of text."), scope=A)
    _sql(path, "UPDATE vectors SET vector = substr(vector, 1, 2045)")  # 511.25 floats
    assert cache.lookup(ask("What is a token?"), scope=A) is None
    # the partition still takes (and serves) new entries
    assert cache.store(ask("What is a byte?"), answer("Eight bits."), scope=A)
    hit = cache.lookup(ask("What is a byte?"), scope=A)
    assert hit is not None
    assert hit.response.content == "Eight bits."


@pytest.mark.parametrize(
    "corrupt",
    [
        "vector = substr(vector, 1, 30)",  # not whole float32s
        "vector = substr(vector, 1, 28)",  # whole float32s, but not the partition's size
        "vector = 'not a blob'",  # text
        "vector = zeroblob(0)",  # empty
        "expires = 'soon'",  # an expiry that is not a number
    ],
)
def test_unreadable_vector_rows_are_skipped_and_the_others_served(
    tmp_path: Path, corrupt: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.db"
    clock = Clock()
    store = SQLiteCacheStore(f"sqlite:///{path}", clock=clock)
    vectors = _vectors(3, dims=8)
    for i, v in enumerate(vectors):
        store.add_vector(A, "p", f"k{i}", v, f"payload {i}", 3600)
    first = min(r for r in _ids(path))  # the first row: the one a size check would read first
    _sql(path, f"UPDATE vectors SET {corrupt} WHERE id = {first}")
    reader = SQLiteCacheStore(f"sqlite:///{path}", clock=clock)  # reads the partition afresh
    with caplog.at_level(logging.WARNING, logger="tokenbudget.cache"):
        found = {m.key: m.payload for m in reader.search(A, "p", vectors[1], 3)}
    assert found == {"k1": "payload 1", "k2": "payload 2"}
    assert "unreadable semantic cache entries ignored" in caplog.text
    assert reader.search(A, "p", vectors[2], 1)[0].key == "k2"  # (read once: a cached search works)
    store.close()
    reader.close()


def _ids(path: Path) -> list[int]:
    db = sqlite3.connect(path)
    try:
        return [int(r[0]) for r in db.execute("SELECT id FROM vectors")]
    finally:
        db.close()


def test_a_semantic_payload_that_is_not_utf8_skips_that_entry_only(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    store = SQLiteCacheStore(f"sqlite:///{path}", clock=Clock())
    vectors = _vectors(2, dims=8)
    store.add_vector(A, "p", "bad", vectors[0], "x", 3600)
    store.add_vector(A, "p", "good", vectors[1], "y", 3600)
    _sql(path, "UPDATE vectors SET payload = CAST(X'7B2276223A31E4B8' AS BLOB) WHERE key = 'bad'")
    assert [(m.key, m.payload) for m in store.search(A, "p", vectors[0], 2)] == [("good", "y")]
    store.close()


# -- 6. a malformed IPv6 host in a Redis cache URL ---------------------------------------------------


@pytest.mark.parametrize("url", ["redis://[::1:6379/0", "rediss://[::1/0", "redis+cluster://[fe80::1:7000"])
def test_a_malformed_ipv6_redis_url_is_named(url: str) -> None:
    pytest.importorskip("redis")
    with pytest.raises(InvalidInputError) as raised:
        open_cache_store(url)
    assert raised.value.field == "store"
    assert "Invalid IPv6 URL" in str(raised.value)
    with pytest.raises(InvalidInputError):
        ExactCache(url)
    with pytest.raises(InvalidInputError):
        SemanticCache(url)


# -- 7. a URL's query is refused by name, with the cache's advice ------------------------------------


@pytest.mark.parametrize("url", ["memory://?max_entries=2", "memory:///", "memory://x", "MEMORY://?a=1"])
def test_a_memory_url_with_anything_after_the_scheme_is_refused(url: str) -> None:
    with pytest.raises(InvalidInputError) as raised:
        open_cache_store(url)
    assert raised.value.field == "store"
    assert raised.value.fix is not None
    assert "max_entries=" in raised.value.fix
    with pytest.raises(InvalidInputError):
        ExactCache(url)


def test_memory_store_options_are_arguments() -> None:
    store = open_cache_store("memory://", max_entries=2)
    assert isinstance(store, MemoryCacheStore)
    assert store.max_entries == 2
    for i in range(5):
        store.put(A, str(i), "{}", 60)
    assert [k for k in map(str, range(5)) if store.get(A, k)] == ["3", "4"]


def test_a_sqlite_cache_url_with_a_query_gives_the_cache_advice(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}?timeout_s=5"
    for opening in (lambda: open_cache_store(url), lambda: SQLiteCacheStore(url), lambda: ExactCache(url)):
        with pytest.raises(InvalidInputError) as raised:
            opening()
        assert raised.value.field == "store"
        assert "an empty cache" in raised.value.problem
        assert raised.value.fix is not None
        assert "open_cache_store(url, timeout_s=" in raised.value.fix
        assert "retention_days" not in raised.value.fix
        assert "SQLiteStore (" not in raised.value.fix


def test_a_sqlite_ledger_url_with_a_query_keeps_the_ledger_advice(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as raised:
        SQLiteStore(f"sqlite:///{tmp_path / 'l.db'}?retention_days=5")
    assert "an empty ledger" in raised.value.problem
    assert raised.value.fix is not None
    assert "retention_days=" in raised.value.fix
