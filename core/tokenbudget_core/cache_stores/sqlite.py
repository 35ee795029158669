"""``sqlite:///path``: cache entries in one SQLite file, shared by the threads and processes that open it.

Exact entries are rows keyed by (scope, key). Semantic entries are rows with the vector as a
float32 blob; a lookup scans its partition's rows with numpy. Each process keeps the
partition's matrix in memory and reads only the rows added since (by rowid); a per-partition
version counter, bumped whenever rows are replaced or deleted, tells it to reload. That keeps
a lookup over 100,000 entries to one matrix-vector product plus three small queries.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from tokenbudget_core.cache_keys import CacheScope
from tokenbudget_core.errors import CacheUnavailableError, InvalidInputError
from tokenbudget_core.stores.sqlite import sqlite_path

from .base import Vector, VectorMatch
from .memory import check_ttl, check_vector, top_k

__all__ = ["SQLiteCacheStore"]

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
)
_PURGE_EVERY_S = 60.0
_PARTITIONS_KEPT = 4_096
"""Partitions whose matrices are kept in this process (least recently searched dropped first)."""


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


class SQLiteCacheStore:
    """Cache entries in a SQLite file (the embedded store).

    Args:
        url: ``sqlite:///relative.db``, ``sqlite:////absolute.db`` or ``sqlite:///:memory:``.
        timeout_s: How long a write waits for another writer's lock.
        clock: Returns epoch seconds (tests pass a fake clock).

    Raises:
        InvalidInputError: ``url`` is not a ``sqlite:///`` URL.
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
        self.path = sqlite_path(url)
        self.url = url
        self.clock = clock
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._partitions: OrderedDict[tuple[str, str], _Partition] = OrderedDict()
        self._next_purge = 0.0
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                self.path, timeout=timeout_s, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            for statement in _SCHEMA:
                self._conn.execute(statement)
        except (OSError, sqlite3.Error) as e:
            raise CacheUnavailableError(url, f"{self.path}: {e}") from e

    @contextmanager
    def _db(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                if write:
                    self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                except BaseException:
                    if write:
                        self._conn.execute("ROLLBACK")
                    raise
                if write:
                    self._conn.execute("COMMIT")
            except sqlite3.Error as e:
                raise CacheUnavailableError(self.url, f"{self.path}: {e}") from e

    @staticmethod
    def _bump(conn: sqlite3.Connection, scope: str, part: str) -> None:
        conn.execute(
            "INSERT INTO versions VALUES (?, ?, 1) "
            "ON CONFLICT (scope, part) DO UPDATE SET version = version + 1",
            (scope, part),
        )

    def _maybe_purge(self, conn: sqlite3.Connection, now: float) -> None:
        if now < self._next_purge:
            return
        self._next_purge = now + _PURGE_EVERY_S
        conn.execute("DELETE FROM exact WHERE expires <= ?", (now,))
        stale = conn.execute("SELECT DISTINCT scope, part FROM vectors WHERE expires <= ?", (now,)).fetchall()
        for scope, part in stale:
            self._bump(conn, scope, part)
        conn.execute("DELETE FROM vectors WHERE expires <= ?", (now,))

    # -- exact entries -----------------------------------------------------------------------------

    def get(self, scope: CacheScope, key: str) -> str | None:
        with self._db() as conn:
            row = conn.execute(
                "SELECT payload FROM exact WHERE scope = ? AND key = ? AND expires > ?",
                (scope.key(), key, self.clock()),
            ).fetchone()
        return None if row is None else str(row[0])

    def put(self, scope: CacheScope, key: str, payload: str, ttl: float) -> None:
        now = self.clock()
        expires = now + check_ttl(ttl)
        with self._db(write=True) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO exact VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (scope.key(), key, *_parts(scope), expires, payload),
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
            dims = conn.execute(
                "SELECT length(vector) FROM vectors WHERE scope = ? AND part = ? LIMIT 1", (sk, partition)
            ).fetchone()
            if dims is not None and dims[0] != vec.nbytes:
                raise InvalidInputError(
                    "vector",
                    f"has {vec.shape[0]} dimensions but this partition holds {dims[0] // 4}",
                )
            if conn.execute(
                "DELETE FROM vectors WHERE scope = ? AND part = ? AND key = ?", (sk, partition, key)
            ).rowcount:
                self._bump(conn, sk, partition)
            conn.execute(
                "INSERT INTO vectors (scope, part, key, ns, tenant, user, feature, expires, vector, payload) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (sk, partition, key, *_parts(scope), expires, vec.tobytes(), payload),
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
            if len(self._partitions) > _PARTITIONS_KEPT:  # the least recently used is read again
                self._partitions.popitem(last=False)  # from the file when next searched
        else:
            self._partitions.move_to_end((sk, partition))
        rows = conn.execute(
            "SELECT id, expires, vector FROM vectors WHERE scope = ? AND part = ? AND id > ? ORDER BY id",
            (sk, partition, cached.last_id),
        ).fetchall()
        if rows:
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            expires = np.fromiter((r[1] for r in rows), dtype=np.float64, count=len(rows))
            fresh = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(len(rows), -1)
            cached.ids = np.concatenate([cached.ids, ids])
            cached.expires = np.concatenate([cached.expires, expires])
            cached.matrix = fresh if cached.matrix is None else np.vstack([cached.matrix, fresh])
            cached.last_id = int(ids[-1])
        return cached

    def search(self, scope: CacheScope, partition: str, vector: Vector, k: int) -> list[VectorMatch]:
        vec = check_vector(vector)
        sk = scope.key()
        with self._db() as conn:
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
            found = {
                row[0]: (str(row[1]), str(row[2]))
                for row in conn.execute(f"SELECT id, key, payload FROM vectors WHERE id IN ({marks})", ids)
            }
        return [  # a row deleted since the matrix was read is skipped
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
            for sk, part in conn.execute(f"SELECT DISTINCT scope, part FROM vectors WHERE {clause}", args):
                self._bump(conn, sk, part)
            dropped += conn.execute(f"DELETE FROM vectors WHERE {clause}", args).rowcount
        return int(dropped)

    def clear(self) -> None:
        with self._db(write=True) as conn:
            conn.execute("DELETE FROM exact")
            for sk, part in conn.execute("SELECT DISTINCT scope, part FROM vectors").fetchall():
                self._bump(conn, sk, part)
            conn.execute("DELETE FROM vectors")

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            self._partitions.clear()
