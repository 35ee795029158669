"""``memory://``: cache entries in this process (lost when it exits), bounded in number.

Exact entries are kept in insertion order and the oldest are evicted past ``max_entries``;
semantic entries are kept per scope and partition as one float32 matrix, scanned with one
matrix-vector product per lookup (fast enough for 100,000 entries per partition); a new entry
is written into the matrix's spare rows (it grows by doubling), so a lookup after a store
costs what any other does. Every 1,024 adds, expired vectors and empty partitions are dropped,
then the oldest partitions past ``max_entries`` vectors (the last one to go only in part: its
oldest rows, so the newest ``max_entries`` vectors stay). A scope is forgotten with its last
entry: memory stays proportional to ``max_entries``, however many users come and go.

A process forked from one holding a store gets a copy of its entries and a lock of its own; a
fork waits for the call another thread is making to finish, so the copy is never half way
through one.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from tokenbudget_core.cache_keys import CacheScope
from tokenbudget_core.clocks import check_clock
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.stores._fork import reset_after_fork

from .base import Vector, VectorMatch

__all__ = [
    "MemoryCacheStore",
    "VectorBucket",
    "check_timeout",
    "check_ttl",
    "top_k",
]


def check_ttl(ttl: float) -> float:
    """Validate a store-level TTL in seconds."""
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < float("inf"):
        raise InvalidInputError("ttl", "must be a positive number of seconds", value=ttl)
    return float(ttl)


_MAX_TIMEOUT_S = 2_147_483
"""The longest ``timeout_s`` (SQLite takes its busy timeout in milliseconds, as a C int)."""


def check_timeout(timeout_s: object) -> float:
    """Validate a store's ``timeout_s`` option: a positive, finite number of seconds."""
    if (
        isinstance(timeout_s, bool)
        or not isinstance(timeout_s, int | float)
        or not 0 < timeout_s <= _MAX_TIMEOUT_S  # (NaN fails this too)
    ):
        raise InvalidInputError(
            "timeout_s",
            f"must be a positive number of seconds (at most {_MAX_TIMEOUT_S:,})",
            value=timeout_s,
            fix="pass how long a write may wait for another writer, e.g. timeout_s=10 (the default)",
        )
    return float(timeout_s)


def check_vector(vector: object) -> Vector:
    """A 1-D float32 copy of ``vector``."""
    arr = np.asarray(vector, dtype=np.float32)
    if arr.ndim != 1 or arr.shape[0] == 0 or not np.isfinite(arr).all():
        raise InvalidInputError("vector", "must be a non-empty 1-D vector of finite numbers", value=arr.shape)
    return arr


def top_k(scores: Vector, k: int) -> list[int]:
    """Indices of the ``k`` highest scores, best first."""
    n = scores.shape[0]
    if n == 0 or k <= 0:
        return []
    idx = np.argpartition(-scores, k - 1)[:k] if k < n else np.arange(n)
    return [int(i) for i in idx[np.argsort(-scores[idx], kind="stable")]]


_FIRST_ROWS = 16
"""The rows a partition's matrix is made with; it doubles each time it is full."""


class VectorBucket:
    """The semantic entries of one scope and partition: the first :attr:`size` rows of one matrix,
    scanned by numpy.

    The matrix has spare rows: an add writes one row (the matrix is copied only when it is full,
    into one twice as large), so a search never waits for the partition to be stacked again.
    """

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.index: dict[str, int] = {}
        self.payloads: list[str] = []
        self.size = 0
        """Rows in use (the first ``size`` rows of the matrix)."""
        self._matrix: Vector | None = None
        self._expiry: npt.NDArray[np.float64] = np.zeros(0, dtype=np.float64)

    @property
    def dimensions(self) -> int | None:
        """The size of this partition's vectors (``None`` before the first)."""
        return None if self._matrix is None else int(self._matrix.shape[1])

    def _room(self, dimensions: int) -> Vector:
        """The matrix, with at least one spare row (doubled when full)."""
        matrix = self._matrix
        if matrix is None:
            matrix = np.empty((_FIRST_ROWS, dimensions), dtype=np.float32)
            self._expiry = np.empty(_FIRST_ROWS, dtype=np.float64)
        elif self.size == matrix.shape[0]:
            grown = np.empty((2 * matrix.shape[0], dimensions), dtype=np.float32)
            grown[: self.size] = matrix[: self.size]
            expiry = np.empty(grown.shape[0], dtype=np.float64)
            expiry[: self.size] = self._expiry[: self.size]
            matrix, self._expiry = grown, expiry
        self._matrix = matrix
        return matrix

    def add(self, key: str, vector: Vector, payload: str, expires: float) -> None:
        held = self.dimensions
        if held is not None and vector.shape[0] != held:
            raise InvalidInputError(
                "vector", f"has {vector.shape[0]} dimensions but this partition holds {held}"
            )
        at = self.index.get(key)
        if at is None:
            matrix = self._room(vector.shape[0])
            at = self.size
            matrix[at] = vector
            self._expiry[at] = expires
            self.keys.append(key)
            self.payloads.append(payload)
            self.index[key] = at
            self.size = at + 1  # last: a row is counted once it is written
        else:
            assert self._matrix is not None
            self._matrix[at] = vector
            self._expiry[at] = expires
            self.payloads[at] = payload

    def search(self, vector: Vector, k: int, now: float) -> list[VectorMatch]:
        if self._matrix is None or self.size == 0:
            return []
        if vector.shape[0] != self._matrix.shape[1]:
            return []  # another embedder's dimension: nothing here is comparable
        n = self.size
        scores = self._matrix[:n] @ vector
        scores[self._expiry[:n] <= now] = -np.inf
        return [
            VectorMatch(float(scores[i]), self.keys[i], self.payloads[i])
            for i in top_k(scores, k)
            if scores[i] > -np.inf
        ]

    def prune(self, now: float) -> None:
        """Drop expired rows (when at least half of them are)."""
        n = self.size
        if self._matrix is None or n == 0:
            return
        live = np.flatnonzero(self._expiry[:n] > now)
        if len(live) * 2 > n:
            return
        self._keep(live)

    def drop_oldest(self, count: int) -> None:
        """Drop the ``count`` oldest rows (the first added: an overwrite keeps its row), keeping
        the newest ``size - count``."""
        if self._matrix is None or count <= 0:
            return
        self._keep(np.arange(min(count, self.size), self.size))

    def _keep(self, live: npt.NDArray[np.intp]) -> None:
        """Keep only the rows ``live`` (ascending: their order, oldest first, is kept)."""
        assert self._matrix is not None
        m = len(live)
        capacity = self._matrix.shape[0]
        if capacity > _FIRST_ROWS and capacity >= 4 * m:  # mostly spare: give the memory back
            capacity = max(_FIRST_ROWS, 2 * m)
        matrix = np.empty((capacity, self._matrix.shape[1]), dtype=np.float32)
        matrix[:m] = self._matrix[live]
        expiry = np.empty(capacity, dtype=np.float64)
        expiry[:m] = self._expiry[live]
        self.keys = [self.keys[i] for i in live]
        self.payloads = [self.payloads[i] for i in live]
        self.index = {k: i for i, k in enumerate(self.keys)}
        self._matrix, self._expiry, self.size = matrix, expiry, m


_SWEEP_EVERY = 1024
"""Vector adds between two sweeps of every partition (see ``MemoryCacheStore._sweep``)."""


class MemoryCacheStore:
    """Cache entries in a dict of this process.

    Args:
        max_entries: Exact entries kept at most, and semantic vectors (the oldest are evicted
            first: exact entries one by one; vectors at the next sweep, the oldest partitions
            whole, then the oldest rows of the partition that would leave fewer than
            ``max_entries``, so the newest ``max_entries`` stay).
        clock: Returns epoch seconds (tests pass a fake clock).

    Raises:
        InvalidInputError: ``max_entries`` is not a positive integer, or ``clock`` not a callable.

    Example:
        >>> store = MemoryCacheStore()
        >>> store.put(CacheScope(tenant="t1"), "k", '{"a": 1}', ttl=60)
        >>> store.get(CacheScope(tenant="t1"), "k"), store.get(CacheScope(tenant="t2"), "k")
        ('{"a": 1}', None)
    """

    url = "memory://"

    def __init__(self, *, max_entries: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise InvalidInputError("max_entries", "must be a positive integer", value=max_entries)
        self.max_entries = max_entries
        check_clock(clock)
        self.clock = clock
        self._lock = threading.Lock()
        self._exact: OrderedDict[tuple[str, str], tuple[float, str]] = OrderedDict()
        self._buckets: dict[tuple[str, str], VectorBucket] = {}
        self._scopes: dict[str, CacheScope] = {}
        """The scope of each scope key that has entries (for :meth:`invalidate`)."""
        self._held: dict[str, int] = {}
        """Per scope key: its exact entries plus its partitions (the scope is forgotten at 0)."""
        self._adds = 0
        reset_after_fork(self, quiesce=True)  # its lock is held for dict and row operations only

    def _after_fork_in_child(self) -> None:
        # The parent's lock may have been held by a thread that does not exist here.
        self._lock = threading.Lock()

    def _hold(self, sk: str, scope: CacheScope) -> None:
        """One more exact entry or partition of scope ``sk`` (lock held)."""
        self._held[sk] = self._held.get(sk, 0) + 1
        self._scopes[sk] = scope

    def _release(self, sk: str, count: int = 1) -> None:
        """``count`` exact entries or partitions of scope ``sk`` fewer (lock held)."""
        left = self._held.get(sk, 0) - count
        if left > 0:
            self._held[sk] = left
        else:
            self._held.pop(sk, None)
            self._scopes.pop(sk, None)

    def get(self, scope: CacheScope, key: str) -> str | None:
        where = (scope.key(), key)
        entry = self._exact.get(where)
        if entry is None:
            return None
        if entry[0] <= self.clock():
            with self._lock:
                if self._exact.get(where) is entry:  # not an entry stored since it was read
                    del self._exact[where]
                    self._release(where[0])
            return None
        return entry[1]

    def put(self, scope: CacheScope, key: str, payload: str, ttl: float) -> None:
        expires = self.clock() + check_ttl(ttl)
        sk = scope.key()
        with self._lock:
            if self._exact.pop((sk, key), None) is None:
                self._hold(sk, scope)
            self._exact[(sk, key)] = (expires, payload)
            while len(self._exact) > self.max_entries:
                (gone, _), _ = self._exact.popitem(last=False)
                self._release(gone)

    def add_vector(
        self, scope: CacheScope, partition: str, key: str, vector: Vector, payload: str, ttl: float
    ) -> None:
        now = self.clock()
        expires = now + check_ttl(ttl)
        vec = check_vector(vector)
        sk = scope.key()
        with self._lock:
            bucket = self._buckets.get((sk, partition))
            if bucket is None:
                bucket = VectorBucket()
                bucket.add(key, vec, payload, expires)  # (first: nothing is held if it raises)
                self._buckets[(sk, partition)] = bucket
                self._hold(sk, scope)
            else:
                bucket.add(key, vec, payload, expires)
            if bucket.size % 1024 == 0:
                bucket.prune(now)
            self._adds += 1
            if self._adds % _SWEEP_EVERY == 0:
                self._sweep(now)

    def _sweep(self, now: float) -> None:
        """Drop expired vectors and the partitions left empty (lock held), then the oldest
        partitions while more than ``max_entries`` vectors are held: one partition per
        conversation or per image must not grow the process without bound. The partition that
        crosses the bound loses only its oldest rows, down to exactly ``max_entries`` held."""
        for where, bucket in list(self._buckets.items()):
            bucket.prune(now)
            if not bucket.size:
                del self._buckets[where]
                self._release(where[0])
        held = sum(b.size for b in self._buckets.values())
        for where in list(self._buckets):  # oldest first (dicts keep insertion order)
            excess = held - self.max_entries
            if excess <= 0:
                break
            bucket = self._buckets[where]
            if bucket.size > excess:
                # Popping it would take its newest entries too (one FAQ partition past
                # max_entries would empty the cache): drop only its oldest rows.
                bucket.drop_oldest(excess)
                break
            held -= self._buckets.pop(where).size
            self._release(where[0])

    def search(self, scope: CacheScope, partition: str, vector: Vector, k: int) -> list[VectorMatch]:
        bucket = self._buckets.get((scope.key(), partition))
        if bucket is None:
            return []
        vec = check_vector(vector)
        with self._lock:
            return bucket.search(vec, k, self.clock())

    def invalidate(self, scope: CacheScope) -> int:
        with self._lock:
            doomed = {sk for sk, s in self._scopes.items() if scope.covers(s)}
            exact = [k for k in self._exact if k[0] in doomed]
            for k in exact:
                del self._exact[k]
            buckets = [k for k in self._buckets if k[0] in doomed]
            dropped = len(exact) + sum(self._buckets.pop(k).size for k in buckets)
            for sk in doomed:
                del self._scopes[sk]
                self._held.pop(sk, None)
            return dropped

    def clear(self) -> None:
        with self._lock:
            self._exact.clear()
            self._buckets.clear()
            self._scopes.clear()
            self._held.clear()

    def close(self) -> None:
        """Nothing to release."""
