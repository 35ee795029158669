"""Response cache stores, chosen by URL: ``memory://``, ``sqlite:///path``, ``redis://...``,
``redis+cluster://...``.

:func:`open_cache_store` picks the backend. The contract is :class:`~.base.CacheStore`.
"""

from __future__ import annotations

from typing import Any

from tokenbudget_core.errors import InvalidInputError, option_names, refuse_unknown

from .base import CacheStore, VectorMatch

__all__ = ["CacheStore", "VectorMatch", "open_cache_store"]


def open_cache_store(url: str | CacheStore = "memory://", **options: Any) -> CacheStore:
    """Open the cache store at ``url`` (a store object is returned as is).

    Args:
        url: ``memory://``, ``sqlite:///path/to/cache.db`` (``sqlite:///:memory:`` for one
            process), ``redis://host:port/db`` / ``rediss://...`` or ``redis+cluster://host:port``
            (Redis 8 for semantic entries).
        options: Passed to the store's constructor (``memory://``: ``max_entries``, ``clock``;
            ``sqlite://``: ``timeout_s``, ``clock``; ``redis://``: ``namespace``,
            ``quantization``, ``socket_timeout``, ``clock``).

    Raises:
        InvalidInputError: Not a store and not a URL with one of these schemes, a ``memory://``
            or ``sqlite://`` URL with a query (options are arguments), an option the chosen
            store does not take (named, with the closest it does), or a bad option value.
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

        rest = url.split("://", 1)[1]
        if rest:  # memory://?max_entries=2 would otherwise be an unbounded store, without a word
            raise InvalidInputError(
                "store",
                f"{url!r}: a memory:// URL takes nothing after memory:// (no path, no query: "
                f"{rest!r} would be ignored)",
                value=url,
                fix="use memory:// and pass options as arguments: "
                "open_cache_store('memory://', max_entries=...) or MemoryCacheStore(max_entries=...)",
            )
        _refuse_unknown(MemoryCacheStore, url, options)
        return MemoryCacheStore(**options)
    if scheme == "sqlite":
        from .sqlite import SQLiteCacheStore

        _refuse_unknown(SQLiteCacheStore, url, options)
        return SQLiteCacheStore(url, **options)
    if scheme in ("redis", "rediss", "redis+cluster"):
        from .redis import RedisCacheStore

        _refuse_unknown(RedisCacheStore, url, options)
        return RedisCacheStore(url, **options)
    raise InvalidInputError(
        "store",
        f"unsupported cache store URL {url!r}",
        value=url,
        fix="use memory://, sqlite:///path/to/cache.db, redis://host:port/db or redis+cluster://host:port",
    )


def _refuse_unknown(store: type[Any], url: str, options: dict[str, Any]) -> None:
    """Refuse an option ``store`` does not take (a typo, or another store's option), named with
    the closest one it does: never a bare ``TypeError``, never ignored."""
    known = [name for name in option_names(store.__init__) if name != "url"]
    refuse_unknown(f"{store.__name__} ({url.split('://', 1)[0]}://)", options, known)
