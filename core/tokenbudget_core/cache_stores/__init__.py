"""Response cache stores, chosen by URL: ``memory://``, ``sqlite:///path``, ``redis://...``,
``redis+cluster://...``.

:func:`open_cache_store` picks the backend. The contract is :class:`~.base.CacheStore`.
"""

from __future__ import annotations

from typing import Any

from tokenbudget_core.errors import InvalidInputError

from .base import CacheStore, VectorMatch

__all__ = ["CacheStore", "VectorMatch", "open_cache_store"]


def open_cache_store(url: str | CacheStore = "memory://", **options: Any) -> CacheStore:
    """Open the cache store at ``url`` (a store object is returned as is).

    Args:
        url: ``memory://``, ``sqlite:///path/to/cache.db`` (``sqlite:///:memory:`` for one
            process), ``redis://host:port/db`` / ``rediss://...`` or ``redis+cluster://host:port``
            (Redis 8 for semantic entries).
        options: Passed to the store's constructor.

    Raises:
        InvalidInputError: Not a store and not a URL with one of these schemes.
        MissingDependencyError: ``redis://`` without the ``redis`` extra.
    """
    if isinstance(url, CacheStore):
        return url
    if not isinstance(url, str) or "://" not in url:
        raise InvalidInputError(
            "store",
            "must be a cache store or a URL",
            value=url,
            fix="use memory://, sqlite:///path/to/cache.db, redis://host:port/db or redis+cluster://host:port",
        )
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        from .memory import MemoryCacheStore

        return MemoryCacheStore(**options)
    if scheme == "sqlite":
        from .sqlite import SQLiteCacheStore

        return SQLiteCacheStore(url, **options)
    if scheme in ("redis", "rediss", "redis+cluster"):
        from .redis import RedisCacheStore

        return RedisCacheStore(url, **options)
    raise InvalidInputError(
        "store",
        f"unsupported cache store URL {url!r}",
        value=url,
        fix="use memory://, sqlite:///path/to/cache.db, redis://host:port/db or redis+cluster://host:port",
    )
