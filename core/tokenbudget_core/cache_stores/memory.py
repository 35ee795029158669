"""``memory://``: cache entries in this process (lost when it exits), bounded in number.

Exact entries are kept in insertion order and the oldest are evicted past ``max_entries``;
semantic entries are kept per scope and partition as one float32 matrix, scanned with one
matrix-vector product per lookup (fast enough for 100,000 entries per partition); every 1,024
adds, expired vectors and empty partitions are dropped, then the oldest partitions past
``max_entries`` vectors.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from tokenbudget_core.cache_keys import CacheScope
from tokenbudget_core.errors import InvalidInputError

from .base import Vector, VectorMatch

__all__ = ["MemoryCacheStore", "VectorBucket", "check_ttl", "top_k"]


def check_ttl(ttl: float) -> float:
    """Validate a store-level TTL in seconds."""
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < float("inf"):
        raise InvalidInputError("ttl", "must be a positive number of seconds", value=ttl)
    return float(ttl)


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


class VectorBucket:
    """The semantic entries of one scope and partition: rows of one matrix, scanned by numpy."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.index: dict[str, int] = {}
        self.rows: list[Vector] = []
        self.expires: list[float] = []
        self.payloads: list[str] = []
        self._matrix: Vector | None = None
        self._expiry: np.ndarray | None = None

    def add(self, key: str, vector: Vector, payload: str, expires: float) -> None:
        if self.rows and vector.shape != self.rows[0].shape:
            raise InvalidInputError(
                "vector",
                f"has {vector.shape[0]} dimensions but this partition holds {self.rows[0].shape[0]}",
            )
        at = self.index.get(key)
        if at is None:
            self.index[key] = len(self.keys)
            self.keys.append(key)
            self.rows.append(vector)
            self.expires.append(expires)
            self.payloads.append(payload)
        else:
            self.rows[at], self.expires[at], self.payloads[at] = vector, expires, payload
        self._matrix = None

    def search(self, vector: Vector, k: int, now: float) -> list[VectorMatch]:
        if not self.rows:
            return []
        if vector.shape != self.rows[0].shape:
            return []  # another embedder's dimension: nothing here is comparable
        if self._matrix is None:
            self._matrix = np.vstack(self.rows)
            self._expiry = np.asarray(self.expires, dtype=np.float64)
        assert self._expiry is not None
        scores = self._matrix @ vector
        scores[self._expiry <= now] = -np.inf
        return [
            VectorMatch(float(scores[i]), self.keys[i], self.payloads[i])
            for i in top_k(scores, k)
            if scores[i] > -np.inf
        ]

    def prune(self, now: float) -> None:
        """Drop expired rows (when at least half of them are)."""
        live = [i for i, e in enumerate(self.expires) if e > now]
        if len(live) * 2 > len(self.keys):
            return
        self.keys = [self.keys[i] for i in live]
        self.rows = [self.rows[i] for i in live]
        self.expires = [self.expires[i] for i in live]
        self.payloads = [self.payloads[i] for i in live]
        self.index = {k: i for i, k in enumerate(self.keys)}
        self._matrix = None


_SWEEP_EVERY = 1024
"""Vector adds between two sweeps of every partition (see ``MemoryCacheStore._sweep``)."""


class MemoryCacheStore:
    """Cache entries in a dict of this process.

    Args:
        max_entries: Exact entries kept at most, and semantic vectors (the oldest are evicted
            first: exact entries one by one, vectors by partition at the next sweep).
        clock: Returns epoch seconds (tests pass a fake clock).

    Raises:
        InvalidInputError: ``max_entries`` is not a positive integer.

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
        self.clock = clock
        self._lock = threading.Lock()
        self._exact: OrderedDict[tuple[str, str], tuple[float, str]] = OrderedDict()
        self._buckets: dict[tuple[str, str], VectorBucket] = {}
        self._scopes: dict[str, CacheScope] = {}
        self._adds = 0

    def get(self, scope: CacheScope, key: str) -> str | None:
        entry = self._exact.get((scope.key(), key))
        if entry is None:
            return None
        if entry[0] <= self.clock():
            with self._lock:
                self._exact.pop((scope.key(), key), None)
            return None
        return entry[1]

    def put(self, scope: CacheScope, key: str, payload: str, ttl: float) -> None:
        expires = self.clock() + check_ttl(ttl)
        sk = scope.key()
        with self._lock:
            self._scopes[sk] = scope
            self._exact.pop((sk, key), None)
            self._exact[(sk, key)] = (expires, payload)
            while len(self._exact) > self.max_entries:
                self._exact.popitem(last=False)

    def add_vector(
        self, scope: CacheScope, partition: str, key: str, vector: Vector, payload: str, ttl: float
    ) -> None:
        now = self.clock()
        expires = now + check_ttl(ttl)
        vec = check_vector(vector)
        sk = scope.key()
        with self._lock:
            self._scopes[sk] = scope
            bucket = self._buckets.setdefault((sk, partition), VectorBucket())
            bucket.add(key, vec, payload, expires)
            if len(bucket.keys) % 1024 == 0:
                bucket.prune(now)
            self._adds += 1
            if self._adds % _SWEEP_EVERY == 0:
                self._sweep(now)

    def _sweep(self, now: float) -> None:
        """Drop expired vectors and the partitions left empty (lock held), then the oldest
        partitions while more than ``max_entries`` vectors are held: one partition per
        conversation or per image must not grow the process without bound."""
        for where, bucket in list(self._buckets.items()):
            bucket.prune(now)
            if not bucket.keys:
                del self._buckets[where]
        held = sum(len(b.keys) for b in self._buckets.values())
        for where in list(self._buckets):  # oldest first (dicts keep insertion order)
            if held <= self.max_entries:
                break
            held -= len(self._buckets.pop(where).keys)

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
            dropped = len(exact) + sum(len(self._buckets.pop(k).keys) for k in buckets)
            for sk in doomed:
                del self._scopes[sk]
            return dropped

    def clear(self) -> None:
        with self._lock:
            self._exact.clear()
            self._buckets.clear()
            self._scopes.clear()

    def close(self) -> None:
        """Nothing to release."""
