"""The cache store contract on the in-memory and SQLite stores."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cache_contract import A, CacheContractTests, Clock, MakeStore, unit
from tokenbudget_core import InvalidInputError
from tokenbudget_core.cache_stores import CacheStore, open_cache_store
from tokenbudget_core.cache_stores import sqlite as sqlite_cache_store
from tokenbudget_core.cache_stores.memory import MemoryCacheStore
from tokenbudget_core.cache_stores.sqlite import SQLiteCacheStore


class TestMemoryStore(CacheContractTests):
    @pytest.fixture
    def make_store(self) -> MakeStore:
        return lambda clock: MemoryCacheStore(clock=clock)

    def test_oldest_exact_entries_are_evicted_past_max_entries(self) -> None:
        store = MemoryCacheStore(max_entries=2)
        for k in ("a", "b", "c"):
            store.put(A, k, k, 60)
        assert [store.get(A, k) for k in ("a", "b", "c")] == [None, "b", "c"]

    def test_expired_partitions_are_dropped_and_vectors_bounded_by_max_entries(self) -> None:
        # one partition per conversation or per image: the process must not grow without bound
        clock = Clock()
        store = MemoryCacheStore(max_entries=500, clock=clock)
        for i in range(1_000):
            store.add_vector(A, f"p{i}", "k", unit(1, 0), "x" * 1_000, 60)
        clock.now += 61  # all expired
        for i in range(24):  # the 1,024th add sweeps
            store.add_vector(A, f"new{i}", "k", unit(1, 0), "fresh", 60)
        assert store.search(A, "p0", unit(1, 0), 3) == []
        assert [m.payload for m in store.search(A, "new23", unit(1, 0), 3)] == ["fresh"]
        for i in range(2_048):  # live partitions past max_entries: the oldest go first
            store.add_vector(A, f"live{i}", "k", unit(1, 0), "live", 60)
        assert store.search(A, "live0", unit(1, 0), 3) == []
        assert [m.payload for m in store.search(A, "live2047", unit(1, 0), 3)] == ["live"]
        assert sum(len(store.search(A, f"live{i}", unit(1, 0), 3)) for i in range(2_048)) <= 500


class TestSQLiteStore(CacheContractTests):
    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Callable[[Callable[[], float]], CacheStore]:
        return lambda clock: SQLiteCacheStore(f"sqlite:///{tmp_path}/cache.db", clock=clock)

    def test_partitions_kept_in_process_are_bounded_and_reread_when_needed(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(sqlite_cache_store, "_PARTITIONS_KEPT", 3)
        store = SQLiteCacheStore(f"sqlite:///{tmp_path}/cache.db", clock=Clock())
        for i in range(6):
            store.add_vector(A, f"p{i}", "k", unit(1, 0), f"entry {i}", 60)
            assert [m.payload for m in store.search(A, f"p{i}", unit(1, 0), 3)] == [f"entry {i}"]
        assert len(store._partitions) == 3
        assert [m.payload for m in store.search(A, "p0", unit(1, 0), 3)] == ["entry 0"]  # read again

    def test_a_second_process_sees_adds_and_invalidations(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path}/shared.db"
        clock = Clock()
        one, two = SQLiteCacheStore(url, clock=clock), SQLiteCacheStore(url, clock=clock)
        one.add_vector(A, "p", "x", unit(1, 0), "px", 60)
        assert [m.key for m in two.search(A, "p", unit(1, 0), 3)] == ["x"]
        one.add_vector(A, "p", "y", unit(1, 0.1), "py", 60)
        assert [m.key for m in two.search(A, "p", unit(1, 0), 3)] == ["x", "y"]
        one.invalidate(A)
        assert two.search(A, "p", unit(1, 0), 3) == []
        one.close()
        two.close()


def test_open_cache_store_by_url(tmp_path: Path) -> None:
    assert isinstance(open_cache_store("memory://"), MemoryCacheStore)
    sqlite = open_cache_store(f"sqlite:///{tmp_path}/c.db")
    assert isinstance(sqlite, SQLiteCacheStore)
    assert open_cache_store(sqlite) is sqlite
    for bad in ("postgres://x", "cache.db", 42):
        with pytest.raises(InvalidInputError, match="store"):
            open_cache_store(bad)  # type: ignore[arg-type]
