"""The cache store contract on the in-memory and SQLite stores."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cache_contract import A, CacheContractTests, Clock, MakeStore, unit
from tokenbudget_core import InvalidInputError
from tokenbudget_core.cache_stores import CacheStore, open_cache_store
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


class TestSQLiteStore(CacheContractTests):
    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Callable[[Callable[[], float]], CacheStore]:
        return lambda clock: SQLiteCacheStore(f"sqlite:///{tmp_path}/cache.db", clock=clock)

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
