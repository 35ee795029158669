"""Ledger stores, chosen by URL: ``memory://``, ``sqlite:///path``, ``redis://...``.

:func:`open_store` picks the backend; ``$TOKENBUDGET_STORE`` is the default URL (set but empty:
refused, see :func:`default_store_url`) and the embedded SQLite file ``./tokenbudget.db`` the
fallback.
"""

from __future__ import annotations

import inspect
from typing import Any, cast

from tokenbudget_core.errors import InvalidInputError, environment_value

from .base import LedgerStore, redact_url

__all__ = ["DEFAULT_STORE_URL", "LedgerStore", "default_store_url", "open_store"]

DEFAULT_STORE_URL = "sqlite:///tokenbudget.db"
STORE_VARIABLE = "TOKENBUDGET_STORE"
"""The environment variable naming the default store."""


def default_store_url() -> str:
    """The store used when none is given: ``$TOKENBUDGET_STORE``, else :data:`DEFAULT_STORE_URL`.

    Only an unset variable means the fallback: one set to an empty or blank string is refused
    (a deployment that meant to name its ledger, ``TOKENBUDGET_STORE=$LEDGER_URL`` with that
    one unset), rather than read as unset, which would record to, or show, a private
    ``./tokenbudget.db``.

    Raises:
        InvalidInputError: ``$TOKENBUDGET_STORE`` is set but empty or blank (the field is
            ``$TOKENBUDGET_STORE``; the fix: unset it, or give it a store URL).
    """
    url = environment_value(
        STORE_VARIABLE,
        fix=f"unset it for the default store ({DEFAULT_STORE_URL}), or set it to the store's URL "
        "(sqlite:///path/to/ledger.db, redis://host:port/db, memory://)",
    )
    if url is None:
        return DEFAULT_STORE_URL
    return url


def open_store(url: str | None = None, **options: object) -> LedgerStore:
    """Open the store at ``url`` (default: ``$TOKENBUDGET_STORE``, else ``sqlite:///tokenbudget.db``,
    see :func:`default_store_url`).

    Only ``None`` (no argument) means the default: an empty string, or any other non-string,
    is refused, so a missing environment variable (``open_store(os.environ.get("X", ""))``)
    cannot quietly open a private SQLite file in the current directory.

    A Redis URL may name the ledger's ``namespace``, ``retention_days`` and
    ``request_retention_days`` as query options (``redis://host:6379/0?namespace=prod``), so the
    URL alone names the same data as ``RedisStore(url, namespace="prod")``; ``options`` are the
    store's keyword arguments.

    Raises:
        InvalidInputError: ``url`` is not a string or is empty (``store``), its scheme is not
            ``memory``, ``sqlite``, ``redis``/``rediss`` or ``redis+cluster``, or the store
            refuses the URL or an option; with no ``url``, ``$TOKENBUDGET_STORE`` is set but
            empty or blank (``$TOKENBUDGET_STORE``).
        MissingDependencyError: The Redis client is not installed.
    """
    if url is None:
        url = default_store_url()
    if not isinstance(url, str):
        raise InvalidInputError(
            "store",
            f"must be a URL string (or None for the default), got {type(url).__name__}",
            value=url,
            fix="memory://, sqlite:///path/to/file.db or redis://host:port/db",
        )
    if not url.strip():
        raise InvalidInputError(
            "store",
            "is empty: an empty URL does not mean the default store",
            value=url,
            fix="pass a URL (memory://, sqlite:///path/to/file.db, redis://host:port/db), "
            "or None (no argument) for $TOKENBUDGET_STORE, else sqlite:///tokenbudget.db",
        )
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    store: type[Any]
    if scheme == "memory":
        from .memory import MemoryStore as store
    elif scheme == "sqlite":
        from .sqlite import SQLiteStore as store
    elif scheme in ("redis", "rediss", "redis+cluster"):
        from .redis import RedisStore as store
    else:
        raise InvalidInputError(
            "store",
            f"unsupported store URL {redact_url(url)!r}",
            value=redact_url(url),
            fix="use memory://, sqlite:///path/to/file.db, redis://host:port/db or redis+cluster://host:port",
        )
    accepted = [name for name in inspect.signature(store).parameters if name != "url"]
    for name in options:
        if name not in accepted:
            raise InvalidInputError(
                name,
                f"is not an option of {store.__name__}",
                fix=f"its options: {', '.join(accepted) or 'none'}",
            )
    return cast(LedgerStore, store(url, **options))
