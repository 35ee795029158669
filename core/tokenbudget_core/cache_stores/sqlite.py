"""``sqlite:///path``: cache entries in one SQLite file, shared by the threads and processes that open it.

Exact entries are rows keyed by (scope, key). Semantic entries are rows with the vector as a
float32 blob; a lookup scans its partition's rows with numpy. Each process keeps the
partition's matrix in memory and reads only the rows added since (by rowid); a per-partition
version, set whenever rows are replaced or deleted, tells it to reload. That keeps a lookup
over 100,000 entries to one matrix-vector product plus three small queries, all read in one
snapshot of the file (a row another process deletes meanwhile, and the rowid SQLite may give
again to a row of another partition, are never mixed up with the rows the matrix was read
from; payloads are read only from the searched scope and partition).

Versions come from one counter of the file, so a partition never gets a version it had before:
a partition's version row is deleted with its last vector (expired, invalidated, cleared), and
a process that read the partition at any version reloads it when it has vectors again. A
partition with vectors always has a version row.

Payloads are stored as text, or, when they hold a lone surrogate (half an emoji pair from a
broken client), as their UTF-8 bytes with ``surrogatepass``, as the other stores keep them. A
row that cannot be read back (bytes that are not UTF-8, a vector blob that is not whole float32s
of the partition's size) is an unreadable entry: skipped and logged, a miss, as on Redis.

A process forked from one holding a store gets a lock and a connection of its own (the parent's
connection is never used nor closed in the child); a fork waits for the call another thread is
making to finish (up to about ``timeout_s``).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import cast

import numpy as np

from tokenbudget_core.cache_keys import CacheScope
from tokenbudget_core.clocks import check_clock
from tokenbudget_core.errors import CacheUnavailableError, InvalidInputError
from tokenbudget_core.stores._fork import fork_clear, process_lock, reset_after_fork
from tokenbudget_core.stores.sqlite import sqlite_path

from .base import Vector, VectorMatch
from .memory import check_timeout, check_ttl, check_vector, top_k

__all__ = ["SQLiteCacheStore"]

logger = logging.getLogger("tokenbudget.cache")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS exact (scope TEXT NOT NULL, key TEXT NOT NULL, ns TEXT NOT NULL, "
    "tenant TEXT NOT NULL, user TEXT NOT NULL, feature TEXT NOT NULL, expires REAL NOT NULL, "
    "payload TEXT NOT NULL, PRIMARY KEY (scope, key)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS vectors (id INTEGER PRIMARY KEY, scope TEXT NOT NULL, part TEXT NOT NULL, "
    "key TEXT NOT NULL, ns TEXT NOT NULL, tenant TEXT NOT NULL, user TEXT NOT NULL, feature TEXT NOT NULL, "
    "expires REAL NOT NULL, vector BLOB NOT NULL, payload TEXT NOT NULL, UNIQUE (scope, part, key))",
    "CREATE INDEX IF NOT EXISTS vectors_expiry ON vectors (expires)",
    "CREATE INDEX IF NOT EXISTS vectors_partition_rows ON vectors (scope, part, id)",
    "CREATE TABLE IF NOT EXISTS versions (scope TEXT NOT NULL, part TEXT NOT NULL, "
    "version INTEGER NOT NULL, PRIMARY KEY (scope, part)) WITHOUT ROWID",
    # The last version given to any partition of the file (one row): a partition's new version
    # is the next one, never one it had before its version row was deleted. A file written by an
    # older release starts past every version it holds.
    "CREATE TABLE IF NOT EXISTS version_counter (one INTEGER PRIMARY KEY CHECK (one = 0), "
    "value INTEGER NOT NULL)",
)
_SEED_COUNTER = "INSERT OR IGNORE INTO version_counter SELECT 0, coalesce(max(version), 0) FROM versions"
_PURGE_EVERY_S = 60.0
_PARTITIONS_KEPT = 4_096
"""Partitions whose matrices are kept in this process (least recently searched dropped first)."""

# Connections inherited through fork() must be neither used nor closed in the child (SQLite's
# advice: its locks belong to the parent). They are parked here so they are never finalised.
_INHERITED: list[sqlite3.Connection] = []


class _Partition:
    """One process's copy of a partition's vectors."""

    def __init__(self, version: int) -> None:
        self.version = version
        self.last_id = 0
        self.ids = np.zeros(0, dtype=np.int64)
        self.expires = np.zeros(0, dtype=np.float64)
        self.matrix: Vector | None = None


def _parts(scope: CacheScope) -> list[str]:
    return scope.key().split(":")


def _stored(payload: str) -> str | bytes:
    """``payload`` as bound to SQLite: the text, or its UTF-8 bytes (``surrogatepass``) when it
    holds a lone surrogate, which SQLite's text cannot (the caches keep such text on purpose)."""
    try:
        payload.encode("utf-8")
    except UnicodeEncodeError:
        return payload.encode("utf-8", "surrogatepass")
    return payload


def _loaded(value: object) -> str:
    """A payload read back (see :func:`_stored`).

    Raises:
        UnicodeDecodeError: Bytes that are not UTF-8 (truncated, or written by another program):
            the callers treat the entry as unreadable, a logged miss.
    """
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogatepass")
    return str(value)


_Row = tuple[int, object, object]


def _readable(rows: list[_Row], width: int | None) -> list[_Row]:
    """The vector rows (``id, expires, vector``) a matrix can be made of: a blob of whole float32s,
    ``width`` bytes (``None``: the most common size of these rows), and a numeric expiry. Others
    (a truncated blob, text, another program's row) are unreadable entries: skipped and logged,
    as the Redis store skips them, never a failed lookup."""
    sizes = [len(r[2]) for r in rows if isinstance(r[2], bytes) and r[2] and len(r[2]) % 4 == 0]
    if width is None and sizes:
        width = max(set(sizes), key=sizes.count)
    good = [
        r
        for r in rows
        if isinstance(r[2], bytes)
        and len(r[2]) == width
        and isinstance(r[1], int | float)
        and not isinstance(r[1], bool)
    ]
    if len(good) < len(rows):
        logger.warning(
            "unreadable semantic cache entries ignored: %d row(s) whose vector is not float32s "
            "of the partition's size or whose expiry is not a number",
            len(rows) - len(good),
        )
    return good


class SQLiteCacheStore:
    """Cache entries in a SQLite file (the embedded store).

    Args:
        url: ``sqlite:///relative.db``, ``sqlite:////absolute.db`` or ``sqlite:///:memory:``.
        timeout_s: How long a write waits for another writer's lock (a positive number of seconds).
        clock: Returns epoch seconds (tests pass a fake clock).

    Raises:
        InvalidInputError: ``url`` is not a ``sqlite:///`` URL or has a query (options are
            arguments: ``timeout_s=``), ``timeout_s`` is not a positive number of seconds or
            ``clock`` is not a callable.
        CacheUnavailableError: The file cannot be opened or is not a database (also raised by
            any operation on a locked or failing database).

    Example:
        >>> store = SQLiteCacheStore("sqlite:///:memory:")
        >>> store.put(CacheScope(tenant="t1"), "k", "{}", ttl=60)
        >>> store.get(CacheScope(tenant="t1"), "k"), store.get(CacheScope(tenant="t2"), "k")
        ('{}', None)
        >>> store.close()
    """

    def __init__(self, url: str, *, timeout_s: float = 10.0, clock: Callable[[], float] = time.time) -> None:
        self._timeout_s = check_timeout(timeout_s)
        check_clock(clock)
        self.path = sqlite_path(
            url,
            opened="an empty cache",
            options_fix="pass options as arguments: open_cache_store(url, timeout_s=...) or "
            "SQLiteCacheStore(url, timeout_s=...)",
        )
        self.url = url
        self.clock = clock
        self._lock = threading.Lock()
        self._partitions: OrderedDict[tuple[str, str], _Partition] = OrderedDict()
        self._next_purge = 0.0
        self._closed = False
        self._conn: sqlite3.Connection | None = self._open()
        self._pid = os.getpid()
        reset_after_fork(self, quiesce=True)

    def _open(self) -> sqlite3.Connection:
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=self._timeout_s, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as e:
            raise CacheUnavailableError(self.url, f"{self.path}: {e}") from e
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            for statement in _SCHEMA:
                conn.execute(statement)
            if conn.execute("SELECT 1 FROM version_counter").fetchone() is None:  # (a write: once)
                conn.execute(_SEED_COUNTER)
        except sqlite3.Error as e:
            conn.close()
            raise CacheUnavailableError(self.url, f"{self.path}: {e}") from e
        return conn

    def _after_fork_in_child(self) -> None:
        """Right after a fork: a lock of its own (another thread of the parent may have held it),
        no partition read by the parent, and a connection of its own (opened on first use: the
        parent's is parked, never used nor closed here)."""
        self._lock = threading.Lock()
        self._own_process()

    def _own_process(self) -> None:
        with process_lock():
            if self._pid == os.getpid():  # another thread of this process got here first
                return
            self._lock = threading.Lock()
            self._partitions = OrderedDict()
            self._next_purge = 0.0
            if self._conn is not None:
                _INHERITED.append(self._conn)
                self._conn = None
            self._pid = os.getpid()

    @contextmanager
    def _db(self, *, write: bool = False, snapshot: bool = False) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock, in a write transaction (``write``), a read transaction
        (``snapshot``: every query reads one state of the file) or none; SQLite failures (and
        text SQLite cannot hold) become :class:`CacheUnavailableError`."""
        if self._pid != os.getpid():  # forked without the fork hooks (C code): never the parent's
            self._own_process()
        fork_clear(self._timeout_s)  # a fork waiting for the lock takes it before this call
        with self._lock:
            try:
                if self._conn is None:
                    if self._closed:
                        raise CacheUnavailableError(self.url, "the store was closed; open a new one")
                    self._conn = self._open()
                conn = self._conn
                if write or snapshot:
                    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield conn
                except BaseException:
                    if conn.in_transaction:
                        with suppress(sqlite3.Error):  # the original error is the one to report
                            conn.execute("ROLLBACK")
                    raise
                if write or snapshot:
                    conn.execute("COMMIT")
            except (sqlite3.Error, UnicodeError) as e:
                raise CacheUnavailableError(self.url, f"{self.path}: {e}") from e

    @staticmethod
    def _bump(conn: sqlite3.Connection, scope: str, part: str) -> None:
        """Give the partition a version it never had (the file's next one): every process that
        read it reloads it."""
        conn.execute(
            "INSERT INTO version_counter VALUES (0, 1) ON CONFLICT (one) DO UPDATE SET value = value + 1"
        )
        conn.execute(
            "INSERT INTO versions SELECT ?, ?, value FROM version_counter WHERE one = 0 "
            "ON CONFLICT (scope, part) DO UPDATE SET version = max(excluded.version, version + 1)",
            (scope, part),
        )
        # (a version an older release counted past the counter: the counter follows it)
        conn.execute(
            "UPDATE version_counter SET value = max(value, "
            "(SELECT version FROM versions WHERE scope = ? AND part = ?)) WHERE one = 0",
            (scope, part),
        )

    def _settle(self, conn: sqlite3.Connection, touched: list[tuple[str, str]]) -> None:
        """After rows of the partitions ``touched`` were deleted: a new version for each that has
        vectors left, and no version row for the others (a partition gets one again, a new
        version, with its next vector)."""
        for scope, part in touched:
            if conn.execute(
                "SELECT 1 FROM vectors WHERE scope = ? AND part = ? LIMIT 1", (scope, part)
            ).fetchone():
                self._bump(conn, scope, part)
            else:
                conn.execute("DELETE FROM versions WHERE scope = ? AND part = ?", (scope, part))

    def _maybe_purge(self, conn: sqlite3.Connection, now: float) -> None:
        if now < self._next_purge:
            return
        self._next_purge = now + _PURGE_EVERY_S
        conn.execute("DELETE FROM exact WHERE expires <= ?", (now,))
        stale = conn.execute("SELECT DISTINCT scope, part FROM vectors WHERE expires <= ?", (now,)).fetchall()
        conn.execute("DELETE FROM vectors WHERE expires <= ?", (now,))
        self._settle(conn, stale)

    # -- exact entries -----------------------------------------------------------------------------

    def get(self, scope: CacheScope, key: str) -> str | None:
        with self._db() as conn:
            row = conn.execute(
                "SELECT payload FROM exact WHERE scope = ? AND key = ? AND expires > ?",
                (scope.key(), key, self.clock()),
            ).fetchone()
        if row is None:
            return None
        try:
            return _loaded(row[0])
        except UnicodeDecodeError as e:  # a truncated or foreign value: an unreadable entry, a miss
            logger.warning("unreadable cache entry ignored (not UTF-8): %s", e)
            return None

    def put(self, scope: CacheScope, key: str, payload: str, ttl: float) -> None:
        now = self.clock()
        expires = now + check_ttl(ttl)
        with self._db(write=True) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO exact VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (scope.key(), key, *_parts(scope), expires, _stored(payload)),
            )
            self._maybe_purge(conn, now)

    # -- semantic entries --------------------------------------------------------------------------

    def add_vector(
        self, scope: CacheScope, partition: str, key: str, vector: Vector, payload: str, ttl: float
    ) -> None:
        now = self.clock()
        expires = now + check_ttl(ttl)
        vec = check_vector(vector)
        sk = scope.key()
        with self._db(write=True) as conn:
            # The partition's size, from a few of its rows that are whole float32s: an unreadable
            # row (skipped by searches) must not make every new vector of the right size refused.
            sizes = [
                int(r[0])
                for r in conn.execute(
                    "SELECT length(vector) FROM vectors WHERE scope = ? AND part = ? "
                    "AND typeof(vector) = 'blob' AND length(vector) > 0 AND length(vector) % 4 = 0 "
                    "LIMIT 8",
                    (sk, partition),
                )
            ]
            if sizes and vec.nbytes not in sizes:
                raise InvalidInputError(
                    "vector",
                    f"has {vec.shape[0]} dimensions but this partition holds "
                    f"{max(set(sizes), key=sizes.count) // 4}",
                )
            replaced = conn.execute(
                "DELETE FROM vectors WHERE scope = ? AND part = ? AND key = ?", (sk, partition, key)
            ).rowcount
            if (
                replaced
                or not conn.execute(  # a partition with vectors has a version row
                    "SELECT 1 FROM versions WHERE scope = ? AND part = ?", (sk, partition)
                ).fetchone()
            ):
                self._bump(conn, sk, partition)
            conn.execute(
                "INSERT INTO vectors (scope, part, key, ns, tenant, user, feature, expires, vector, payload) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (sk, partition, key, *_parts(scope), expires, vec.tobytes(), _stored(payload)),
            )
            self._maybe_purge(conn, now)

    def _refresh(self, conn: sqlite3.Connection, sk: str, partition: str) -> _Partition:
        row = conn.execute(
            "SELECT version FROM versions WHERE scope = ? AND part = ?", (sk, partition)
        ).fetchone()
        version = 0 if row is None else int(row[0])
        cached = self._partitions.get((sk, partition))
        if cached is None or cached.version != version:
            cached = self._partitions[(sk, partition)] = _Partition(version)
            self._partitions.move_to_end((sk, partition))
            if len(self._partitions) > _PARTITIONS_KEPT:  # the least recently used is read again
                self._partitions.popitem(last=False)  # from the file when next searched
        else:
            self._partitions.move_to_end((sk, partition))
        rows = conn.execute(
            "SELECT id, expires, vector FROM vectors WHERE scope = ? AND part = ? AND id > ? ORDER BY id",
            (sk, partition, cached.last_id),
        ).fetchall()
        if rows:
            cached.last_id = int(rows[-1][0])  # (past the rows skipped below too: read once)
            rows = _readable(rows, None if cached.matrix is None else cached.matrix.shape[1] * 4)
        if rows:
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            expires = np.fromiter((r[1] for r in rows), dtype=np.float64, count=len(rows))
            blobs = b"".join(cast(bytes, r[2]) for r in rows)  # (_readable kept bytes only)
            fresh = np.frombuffer(blobs, dtype=np.float32).reshape(len(rows), -1)
            cached.ids = np.concatenate([cached.ids, ids])
            cached.expires = np.concatenate([cached.expires, expires])
            cached.matrix = fresh if cached.matrix is None else np.vstack([cached.matrix, fresh])
        return cached

    def search(self, scope: CacheScope, partition: str, vector: Vector, k: int) -> list[VectorMatch]:
        vec = check_vector(vector)
        sk = scope.key()
        with self._db(snapshot=True) as conn:  # the payloads of the very rows the matrix holds
            cached = self._refresh(conn, sk, partition)
            if cached.matrix is None or cached.matrix.shape[1] != vec.shape[0]:
                return []
            scores = cached.matrix @ vec
            scores[cached.expires <= self.clock()] = -np.inf
            best = [i for i in top_k(scores, k) if scores[i] > -np.inf]
            if not best:
                return []
            ids = [int(cached.ids[i]) for i in best]
            marks = ",".join("?" * len(ids))
            found: dict[int, tuple[str, str]] = {}
            for row in conn.execute(
                f"SELECT id, key, payload FROM vectors WHERE scope = ? AND part = ? AND id IN ({marks})",
                [sk, partition, *ids],
            ):
                try:
                    found[row[0]] = (str(row[1]), _loaded(row[2]))
                except UnicodeDecodeError as e:  # one unreadable entry is skipped, not the lookup
                    logger.warning("unreadable semantic cache entry ignored (not UTF-8): %s", e)
        return [  # a row deleted (or unreadable) since the matrix was read is skipped
            VectorMatch(float(scores[i]), *found[row_id])
            for i, row_id in zip(best, ids, strict=True)
            if row_id in found
        ]

    # -- management --------------------------------------------------------------------------------

    def invalidate(self, scope: CacheScope) -> int:
        ns, tenant, user, feature = _parts(scope)
        where, args = ["ns = ?"], [ns]
        for column, value, given in (
            ("tenant", tenant, scope.tenant),
            ("user", user, scope.user),
            ("feature", feature, scope.feature),
        ):
            if given is not None:
                where.append(f"{column} = ?")
                args.append(value)
        clause = " AND ".join(where)
        with self._db(write=True) as conn:
            dropped = conn.execute(f"DELETE FROM exact WHERE {clause}", args).rowcount
            touched = conn.execute(
                f"SELECT DISTINCT scope, part FROM vectors WHERE {clause}", args
            ).fetchall()
            dropped += conn.execute(f"DELETE FROM vectors WHERE {clause}", args).rowcount
            self._settle(conn, touched)
        return int(dropped)

    def clear(self) -> None:
        with self._db(write=True) as conn:
            conn.execute("DELETE FROM exact")
            conn.execute("DELETE FROM vectors")
            conn.execute("DELETE FROM versions")  # (the counter stays: versions are never given twice)

    def close(self) -> None:
        if self._pid != os.getpid():  # forked: the parent's connection is parked, never closed here
            self._own_process()
        with self._lock:
            conn, self._conn, self._closed = self._conn, None, True
            self._partitions.clear()
        if conn is not None:
            conn.close()
