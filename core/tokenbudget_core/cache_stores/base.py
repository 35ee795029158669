"""The cache store contract: exact entries by key, semantic entries by vector, both per scope.

A store keeps opaque JSON payloads (the caches write and read them); it never unpickles or
evaluates anything. Every entry belongs to one :class:`~tokenbudget_core.cache_keys.CacheScope`
and is only ever looked up within it: a store has no operation that reads across scopes.
Semantic entries live in *partitions* of a scope (one per model, system prompt, tool set,
parameters, earlier turns, the current turn's tool results, the last user turn's images, and
the embedder and its vector size, chosen by the semantic cache): vectors of two partitions are never compared.

Entries expire ``ttl`` seconds after they are written (the caches also check the expiry
written in each payload, so a store that keeps an entry a little longer never serves it).
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from tokenbudget_core.cache_keys import CacheScope

__all__ = ["CacheStore", "Vector", "VectorMatch"]

Vector = npt.NDArray[np.float32]


class VectorMatch(NamedTuple):
    """One semantic candidate: its cosine similarity, key and payload."""

    score: float
    key: str
    payload: str


@runtime_checkable
class CacheStore(Protocol):
    """Where a response cache keeps its entries (the injection seam).

    Implementations: :class:`~.memory.MemoryCacheStore` (``memory://``),
    :class:`~.sqlite.SQLiteCacheStore` (``sqlite:///path``) and
    :class:`~.redis.RedisCacheStore` (``redis://``: exact entries as strings, semantic entries
    in Redis 8 vector sets).
    """

    url: str
    """Where the store lives (passwords redacted)."""

    def get(self, scope: CacheScope, key: str) -> str | None:
        """The payload of the exact entry ``key`` in ``scope`` (``None`` when absent or expired)."""
        ...

    def put(self, scope: CacheScope, key: str, payload: str, ttl: float) -> None:
        """Write (or overwrite) an exact entry that expires after ``ttl`` seconds."""
        ...

    def add_vector(
        self, scope: CacheScope, partition: str, key: str, vector: Vector, payload: str, ttl: float
    ) -> None:
        """Write (or overwrite) a semantic entry: a unit-length float32 vector and its payload."""
        ...

    def search(self, scope: CacheScope, partition: str, vector: Vector, k: int) -> list[VectorMatch]:
        """The ``k`` live entries of the partition most similar to ``vector``, best first."""
        ...

    def invalidate(self, scope: CacheScope) -> int:
        """Drop every entry (exact and semantic) whose scope ``scope`` covers; how many were dropped.

        ``scope`` covers an entry's scope when they agree on the namespace and on every
        tenant, user and feature ``scope`` sets (see :meth:`CacheScope.covers`).
        """
        ...

    def clear(self) -> None:
        """Drop every entry of this store."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
