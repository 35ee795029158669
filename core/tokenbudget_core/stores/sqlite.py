"""``sqlite:///path``: the embedded default store, safe across threads and processes.

Each operation of the contract (see :mod:`.base`) is one ``BEGIN IMMEDIATE`` transaction:
the write lock is taken before anything is read, so a check-then-increment can never
interleave with another process's. The file is in WAL mode (readers never block the
writer) with ``synchronous=NORMAL``; a writer that finds the lock taken waits up to
``timeout_s`` and then fails with :class:`~tokenbudget_core.errors.BudgetUnavailableError`.
The threads of a process take turns on one connection; the wait for that turn counts against
the same ``timeout_s``, so with many threads queued behind a locked file each still fails within
about ``timeout_s`` of its call (not one ``timeout_s`` per thread ahead of it). Reads take
their turn on that connection too: a report that holds it longer than ``timeout_s`` (a very
large ledger read on a busy service) makes the calls queued behind it fail as unreachable, as
the ledger's ``on_unavailable`` says; give such a service a ``timeout_s`` longer than its
slowest report, or read reports from another process (its own store object).
A process forked after opening a store gets its own connection on first use, and a lock of
its own. A fork waits for the call another thread is making on the store to end (at most
``timeout_s``; past that it goes on, see :mod:`._fork`): the child never uses the parent's
connection, and normally inherits no transaction in flight, nor SQLite's record of its locks.
Opening a file already at :data:`SCHEMA_VERSION` takes no write lock (it opens while another
process is writing).

The file deleted or replaced under a running process (a cleanup job, a redeploy that recreates
the volume): the store notices that its path no longer names the file it opened (the path's
device and inode, checked after every commit and before any call at most once a second) and
opens the path again, with a WARNING on logger ``tokenbudget.store.sqlite``; later calls use the
file the path names. A commit whose transaction went to the old file raises
:class:`~tokenbudget_core.errors.BudgetUnavailableError` (its usage is in a file no other process
reads): the ledger spools it and replays it into the new file, so it is not lost. Other writes
made in the second before the check (a reservation's hold, a once-mark) stay in the old file.
What was in the old file when it was deleted is gone with it.

``read_only=True`` opens an existing ledger to read it (reports) without ever modifying the file.

URLs: ``sqlite:///relative/path.db`` (relative to the working directory when opened),
``sqlite:////absolute/path.db`` (four slashes) and ``sqlite:///:memory:`` (one process only).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import cast

from tokenbudget_core.errors import BudgetUnavailableError, InvalidInputError

from ._fork import fork_clear, process_lock, reset_after_fork
from .base import (
    CONVERSATION_MARK_TTL_S,
    CommitOutcome,
    CommitRequest,
    CostPair,
    Metric,
    RequestState,
    ReserveOutcome,
    ReserveRequest,
    RollupRow,
    check_cost_pairs,
    check_days,
)

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

logger = logging.getLogger("tokenbudget.store.sqlite")

SCHEMA_VERSION = 1
"""Kept in ``PRAGMA user_version``; a file with a newer version is refused, an older one migrated."""

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS balances (day TEXT NOT NULL, scope TEXT NOT NULL, metric TEXT NOT NULL, "
    "spent INTEGER NOT NULL, reserved INTEGER NOT NULL, PRIMARY KEY (day, scope, metric)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS requests (day TEXT NOT NULL, request_id TEXT NOT NULL, state TEXT NOT NULL, "
    "expires_ms INTEGER NOT NULL, checks_json TEXT NOT NULL, PRIMARY KEY (day, request_id)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS requests_expiry ON requests (day, state, expires_ms)",
    "CREATE TABLE IF NOT EXISTS rollup (day TEXT NOT NULL, rollup_key TEXT NOT NULL, field TEXT NOT NULL, "
    "value INTEGER NOT NULL, PRIMARY KEY (day, rollup_key, field)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS marks (key TEXT PRIMARY KEY, expires_at INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS call_costs (day TEXT NOT NULL, feature TEXT NOT NULL, cost INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS call_costs_day_feature ON call_costs (day, feature)",
)
_DAY_TABLES = ("balances", "requests", "rollup", "call_costs")
_TABLES = (*_DAY_TABLES, "marks")
_ADD = (
    "INSERT INTO balances (day, scope, metric, spent, reserved) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (day, scope, metric) DO UPDATE "
    "SET spent = spent + excluded.spent, reserved = reserved + excluded.reserved"
)
_SET_STATE = (  # a settled request keeps no checks: they are needed only while it holds a lease
    "INSERT INTO requests VALUES (?, ?, ?, 0, '[]') "
    "ON CONFLICT (day, request_id) DO UPDATE SET state = excluded.state, checks_json = '[]'"
)
_ADD_COUNTER = (
    "INSERT INTO rollup VALUES (?, ?, ?, ?) "
    "ON CONFLICT (day, rollup_key, field) DO UPDATE SET value = value + excluded.value"
)
_EXPIRED = "WHERE day = ? AND state = 'reserved' AND expires_ms <= ?"
_PAIRS_PER_QUERY = 400
"""``(day, feature)`` pairs one :meth:`SQLiteStore.call_costs_many` query reads: two parameters
each, within the 999 host parameters of the oldest SQLite builds."""

# Connections inherited through fork() must be neither used nor closed in the child (SQLite's
# advice: its locks belong to the parent). They are parked here so they are never finalised.
_INHERITED: list[sqlite3.Connection] = []
# The last day each database file was purged for, so purging runs at most once a day per process.
_LAST_PURGE: dict[str, str] = {}
_PURGE_BATCH = 2_000
"""Rows one purge transaction deletes at most: a purge of a busy day is many short write
transactions (other threads and processes write in between), never one long one."""
_PURGES = {  # table: (its key columns, which rows of a day before the cutoff go)
    "balances": ("day, scope, metric", "day < ?"),
    "requests": ("day, request_id", "day < ?"),
    "rollup": ("day, rollup_key, field", "day < ?"),
    "call_costs": ("rowid", "day < ?"),
    "marks": ("key", "expires_at <= ?"),
    "settled_requests": ("day, request_id", "day < ? AND state != 'reserved'"),
}
_DEFAULT_REQUEST_RETENTION_DAYS = 7
_FILE_CHECK_EVERY_S = 1.0
"""How often a call that writes nothing checks that the path still names the file opened."""
_MAX_TIMEOUT_S = 2_147_483
"""Longest wait for another writer's lock: SQLite's busy timeout is an int of milliseconds."""


_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}").fullmatch


_LEDGER_OPTIONS_FIX = (
    "pass options to SQLiteStore (retention_days=, timeout_s=) or to open_store(url, **options)"
)


def sqlite_path(
    url: object, *, opened: str = "an empty ledger", options_fix: str = _LEDGER_OPTIONS_FIX
) -> str:
    """The file a ``sqlite:///`` URL names, absolute (or ``:memory:``).

    Args:
        url: The ``sqlite:///`` URL.
        opened: What the file a URL with a query would name holds, for the error (a ledger's
            ``"an empty ledger"``, a cache's ``"an empty cache"``).
        options_fix: Where the caller's options go instead of a query (the error's fix): the
            ledger's store by default; a cache store passes its own.

    Raises:
        InvalidInputError: ``url`` is not a SQLite URL, or has a query (named ``store``).
    """
    prefix = "sqlite:///"
    if not isinstance(url, str) or not url.lower().startswith(prefix) or len(url) == len(prefix):
        raise InvalidInputError(
            "store",
            f"{url!r} is not a SQLite URL",
            value=url,
            fix="use sqlite:///relative/path.db, sqlite:////absolute/path.db or sqlite:///:memory:",
        )
    path = url[len(prefix) :]
    if "?" in path:  # a Redis URL takes options; this one would name another (empty) file
        raise InvalidInputError(
            "store",
            f"{url!r}: a SQLite URL takes no query (the file would be {path!r}, {opened})",
            value=url,
            fix=options_fix,
        )
    return path if path == ":memory:" else os.path.abspath(path)


def _int(value: object, name: str) -> int:
    """``value`` as a plain int (an int subclass such as ``TokenCount`` as its value; never a bool)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(name, "must be an int (tokens, or nano-USD for money)", value=value)
    if not -(2**63) <= value < 2**63:
        raise InvalidInputError(name, "must fit in a signed 64-bit integer", value=value)
    return int(value)


def _lease_end(now_ms: object, lease_ms: object) -> int:
    """When a lease taken at ``now_ms`` ends: a signed 64-bit number of milliseconds (SQLite's
    INTEGER), else :class:`InvalidInputError` naming ``lease_ms``."""
    for name, value in (("now_ms", now_ms), ("lease_ms", lease_ms)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInputError(name, "must be an int (milliseconds)", value=value)
    end = int(cast("int", now_ms)) + int(cast("int", lease_ms))
    if not -(2**63) <= end < 2**63:
        raise InvalidInputError(
            "lease_ms",
            f"a lease of {lease_ms:,} ms from now_ms={now_ms:,} does not end within a signed 64-bit "
            "number of milliseconds",
            value=lease_ms,
            fix="pass a lease of at most a few years (Ledger(lease_seconds=...), e.g. 600)",
        )
    return end


def _check_options(timeout_s: object, retention_days: object, request_retention_days: object) -> None:
    """``timeout_s`` a positive number of seconds, ``retention_days`` a positive int or ``None``."""
    if (
        isinstance(timeout_s, bool)
        or not isinstance(timeout_s, int | float)
        or not (0 < timeout_s <= _MAX_TIMEOUT_S)  # (NaN fails this too)
    ):
        raise InvalidInputError(
            "timeout_s",
            f"must be a positive number of seconds (at most {_MAX_TIMEOUT_S:,})",
            value=timeout_s,
            fix="pass how long an operation may wait for another writer, e.g. timeout_s=30",
        )
    if retention_days is not None and (
        isinstance(retention_days, bool) or not isinstance(retention_days, int) or retention_days <= 0
    ):
        raise InvalidInputError(
            "retention_days",
            "must be a positive number of days (an int), or None to keep everything",
            value=retention_days,
            fix="pass e.g. retention_days=400; older days are deleted, today's never",
        )
    if request_retention_days is not None and (
        isinstance(request_retention_days, bool)
        or not isinstance(request_retention_days, int)
        or request_retention_days <= 0
        or (isinstance(retention_days, int) and request_retention_days > retention_days)
    ):
        most = "" if retention_days is None else f" (at most retention_days, {retention_days})"
        raise InvalidInputError(
            "request_retention_days",
            f"must be a positive number of days{most}, or None for the default (7)",
            value=request_retention_days,
            fix="pass e.g. request_retention_days=7; a commit replayed later than that is charged again",
        )


def _yesterday() -> str:
    """Yesterday (UTC): the first day a purge never deletes (some time zone may still live it)."""
    return (datetime.now(UTC).date() - timedelta(days=1)).isoformat()


_UNKNOWN = (-1, -1)
"""A path that cannot be stat'ed for a reason other than its absence (a process that dropped the
privileges it opened the file with): taken as the same file, never as a move."""


def _file_id(path: str) -> tuple[int, int] | None:
    """The device and inode ``path`` names (``None``: nothing there; :data:`_UNKNOWN`: cannot tell,
    e.g. permission denied on a directory of the path)."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return _UNKNOWN
    return (st.st_dev, st.st_ino)


def _unavailable(error: BaseException) -> bool:
    """Operational failures (locked, I/O, not a database); not integrity or programming errors."""
    return isinstance(error, sqlite3.OperationalError) or type(error) is sqlite3.DatabaseError


class SQLiteStore:
    """The ledger's store in one SQLite file, shared by every thread and process that opens it.

    Args:
        url: ``sqlite:///relative.db``, ``sqlite:////absolute.db`` or ``sqlite:///:memory:``.
            The parent directory is created when missing.
        timeout_s: How long an operation waits for another writer's lock before failing (its
            wait for other threads of this process on the same store included).
        retention_days: Days of history to keep; older days are purged at most once a day per
            process, the first time a newer day is reserved or committed. The days are counted
            back from that day, or from tomorrow (UTC) when that day is later still: a request
            dated in the future cannot purge the present. ``None`` keeps every day's figures.
            A purge deletes at most a few thousand rows per transaction.
        request_retention_days: Settled request ids (what makes a replayed commit count once)
            are purged sooner, counted the same way (one row per call adds up; default 7 days,
            or ``retention_days`` when shorter): a commit replayed later than that is charged
            again. A request still holding a lease is kept until its day's purge. A settled
            request keeps no copy of its checks (those are needed only while it holds a lease).
        read_only: Open an existing ledger for reading only (SQLite ``mode=ro``): nothing is
            created, migrated, switched to WAL or purged, and the file is never modified (in WAL
            mode SQLite may create its ``-wal``/``-shm`` side files). :meth:`totals` counts passed
            leases as released without writing; :meth:`reserve`, :meth:`commit`, :meth:`release`,
            :meth:`mark_once`, :meth:`record_call_cost` and :meth:`purge` raise
            :class:`~tokenbudget_core.errors.BudgetUnavailableError`.

    Raises:
        InvalidInputError: ``url`` is not a ``sqlite:///`` URL; ``timeout_s`` is not a positive
            number of seconds, ``retention_days`` a positive int (or ``None``), or
            ``request_retention_days`` a positive int up to ``retention_days`` (or ``None``); with
            ``read_only``, the database is in memory or the file holds no ledger (none of its
            tables).
        BudgetUnavailableError: The file cannot be created or opened (with ``read_only``: does
            not exist), is not a SQLite database, or was written by a newer tokenbudget (also
            raised later by any operation that hits a locked database past ``timeout_s`` or an
            I/O error).

    Example:
        >>> store = SQLiteStore("sqlite:///:memory:")
        >>> store.totals("2026-11-23", [("global", "nanos")], now_ms=0)
        {('global', 'nanos'): (0, 0)}
        >>> store.close()
    """

    commits_conversation_marks = True
    """A commit's ``conversation_mark`` is set in the commit's transaction (see :mod:`.base`)."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 30.0,
        retention_days: int | None = 400,
        request_retention_days: int | None = None,
        read_only: bool = False,
    ) -> None:
        self.url = url
        self.path = sqlite_path(url)
        """The database file's absolute path (or ``:memory:``)."""
        _check_options(timeout_s, retention_days, request_retention_days)
        self.read_only = read_only
        """True when the file was opened for reading only."""
        if read_only and self.path == ":memory:":
            raise InvalidInputError(
                "read_only",
                "an in-memory database has no ledger to read",
                value=url,
                fix="open a ledger file",
            )
        self._timeout_s = timeout_s
        self._retention_days = retention_days
        if request_retention_days is None:
            request_retention_days = min(_DEFAULT_REQUEST_RETENTION_DAYS, retention_days or 7)
        self._request_retention_days: int = request_retention_days
        self._lock = threading.Lock()
        self._busy_ms: dict[int, int] = {}  # the busy timeout last set on the connection (by id)
        self._file: tuple[int, int] | None = None  # the (device, inode) the connection opened
        self._next_file_check = 0.0  # time.monotonic() of the next check by a call writing nothing
        self._conn: sqlite3.Connection | None = self._open()
        self._pid = os.getpid()
        reset_after_fork(self, quiesce=True)

    def _after_fork_in_child(self) -> None:
        """Right after a fork: a lock of its own (the parent's was held for the fork); the
        connection is replaced on first use (see :meth:`_own_connection`)."""
        self._lock = threading.Lock()

    def _own_connection(self) -> None:
        """In a forked process, before anything takes the lock: a lock and a connection of its own
        (the parent's connection is never used nor closed here; SQLite's locks belong to the parent)."""
        with process_lock():
            if self._pid == os.getpid():  # another thread of this process got here first
                return
            self._lock = threading.Lock()
            if self._conn is not None:
                conn = self._open()
                _INHERITED.append(self._conn)
                self._conn = conn
            self._pid = os.getpid()

    def _fail(self, error: BaseException) -> BudgetUnavailableError:
        return BudgetUnavailableError(self.url, f"{self.path}: {error}")

    def _open(self) -> sqlite3.Connection:
        try:
            if self.read_only:  # mode=ro: SQLite itself refuses every write, and never creates the file
                target, uri = Path(self.path).as_uri() + "?mode=ro", True
            else:
                target, uri = self.path, False
                if self.path != ":memory:":
                    Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                target, timeout=self._timeout_s, isolation_level=None, check_same_thread=False, uri=uri
            )
        except (OSError, sqlite3.Error) as e:
            raise self._fail(e) from e
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._timeout_s * 1000)}")
            if self.read_only:
                self._check_ledger(conn)
            else:
                self._enable_wal(conn)
                conn.execute("PRAGMA synchronous = NORMAL")
                self._migrate(conn)
        except BaseException as e:
            conn.close()
            if _unavailable(e):
                raise self._fail(e) from e
            raise
        if self.path != ":memory:":
            self._file = _file_id(self.path)
            self._next_file_check = time.monotonic() + _FILE_CHECK_EVERY_S
        return conn

    def _moved(self) -> bool:
        """True when the path no longer names the file the connection opened (deleted, replaced)."""
        if self._file is None or self._file == _UNKNOWN:
            return False
        now = _file_id(self.path)
        return now != _UNKNOWN and now != self._file

    def _reopen(self, conn: sqlite3.Connection) -> sqlite3.Connection:
        """Open the file the path names now in place of ``conn`` (lock held), with a WARNING.

        The old connection is closed. SQLite finds a file's ``-wal`` and ``-shm`` by name: a file
        put in place of the database with the old side files left next to it is read through
        them (replace the three files together, or none). If the path cannot be opened,
        :class:`BudgetUnavailableError` (the next call tries again)."""
        self._next_file_check = time.monotonic() + _FILE_CHECK_EVERY_S
        fresh = self._open()
        logger.warning(
            "%s: the database file was deleted or replaced while this process had it open; "
            "opened the file the path names now (figures written to the old file since it was "
            "replaced are spooled and replayed into this one; replace -wal and -shm with the "
            "database, or SQLite reads the new file through the old ones)",
            self.path,
        )
        self._conn, self._busy_ms = fresh, {}
        with suppress(sqlite3.Error):
            conn.close()
        return fresh

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        """Switch to WAL, retrying: the switch needs a moment alone and SQLite does not wait for it."""
        deadline = time.monotonic() + self._timeout_s
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as e:
                if e.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _check_version(self, conn: sqlite3.Connection) -> int:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise BudgetUnavailableError(
                self.url,
                f"{self.path} has schema version {version} but this tokenbudget knows up to "
                f"{SCHEMA_VERSION}; upgrade tokenbudget-kit",
            )
        return version

    def _check_ledger(self, conn: sqlite3.Connection) -> None:
        """Read-only: the file must already be a ledger (there is nothing to create or migrate)."""
        conn.execute("BEGIN")
        try:
            self._check_version(conn)
            query = "SELECT name FROM sqlite_master WHERE type = 'table'"
            present = {name for (name,) in conn.execute(query)}
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        missing = [t for t in _TABLES if t not in present]
        if missing:
            what = (
                "none of the ledger's tables" if len(missing) == len(_TABLES) else f"no {', '.join(missing)}"
            )
            raise InvalidInputError(
                "store",
                f"{self.path!r} is not a tokenbudget ledger (it has {what})",
                value=self.url,
                fix="point it at the file your app's Ledger records to",
            )

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Create or upgrade the tables. A file already at :data:`SCHEMA_VERSION` is only read (no
        write lock): it opens while another process holds a write transaction."""
        if self._check_version(conn) == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")  # then check again: another process may have migrated it
        try:
            version = self._check_version(conn)
            if version < SCHEMA_VERSION:
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    @contextmanager
    def _transaction(
        self, begin: str = "BEGIN IMMEDIATE", *, usage: bool = False
    ) -> Iterator[sqlite3.Connection]:
        """One transaction under the process-local lock (``BEGIN IMMEDIATE``: one that writes);
        sqlite failures become BudgetUnavailableError. ``usage``: it records usage, and raises
        BudgetUnavailableError after its COMMIT if the path no longer names the file it went to."""
        deadline = time.monotonic() + self._timeout_s
        if self._pid != os.getpid():  # forked: never touch the parent's lock or connection
            self._own_connection()
        # The wait for the lock counts against timeout_s: a call queued behind others that wait
        # on another process's write lock fails when its own timeout_s has passed, not theirs too.
        fork_clear(self._timeout_s)  # a fork waiting for the lock takes it before this call
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise self._fail(
                sqlite3.OperationalError(
                    f"database is locked (other threads of this process waited on it for the "
                    f"{self._timeout_s:g} s of timeout_s)"
                )
            )
        try:
            if self._conn is None:
                raise BudgetUnavailableError(self.url, "the store was closed; open a new one")
            if self.read_only and begin != "BEGIN":
                raise BudgetUnavailableError(
                    self.url, f"{self.path} is opened read-only; open the store without read_only to write"
                )
            conn = self._conn
            if self._file is not None and time.monotonic() >= self._next_file_check:
                self._next_file_check = time.monotonic() + _FILE_CHECK_EVERY_S
                if self._moved():
                    conn = self._reopen(conn)
            try:
                self._wait_at_most(conn, deadline - time.monotonic())
                conn.execute(begin)
                yield conn
                conn.execute("COMMIT")
            except BaseException as e:
                if conn.in_transaction:
                    with suppress(sqlite3.Error):  # the original error is the one to report
                        conn.execute("ROLLBACK")
                if _unavailable(e):
                    raise self._fail(e) from e
                raise
            if usage and self._moved():  # this commit went to a file nobody reads
                self._reopen(conn)
                raise BudgetUnavailableError(
                    self.url,
                    f"{self.path} was deleted or replaced while this call wrote to it: its write "
                    "is in the old file, not in the one the path names now (opened for the next "
                    "calls); retry the call (the ledger spools a commit and replays it)",
                )
        finally:
            self._lock.release()

    def _wait_at_most(self, conn: sqlite3.Connection, seconds: float) -> None:
        """SQLite's busy timeout for this transaction: what is left of the call's ``timeout_s``
        (all of it unless the call waited for the lock; none left: one try, no wait)."""
        full = int(self._timeout_s * 1000)
        wanted = full if seconds > self._timeout_s - 0.005 else max(0, int(seconds * 1000))
        if wanted != self._busy_ms.get(id(conn)):
            conn.execute(f"PRAGMA busy_timeout = {wanted}")
            self._busy_ms = {id(conn): wanted}

    @staticmethod
    def _add(db: sqlite3.Connection, day: str, rows: Sequence[tuple[str, str, int]], *, spent: bool) -> None:
        db.executemany(_ADD, [(day, s, m, a, 0) if spent else (day, s, m, 0, a) for s, m, a in rows])

    def _unreserve(self, db: sqlite3.Connection, day: str, checks_json: str) -> None:
        self._add(db, day, [(s, m, -a) for s, m, a in json.loads(checks_json)], spent=False)

    def _expire(self, db: sqlite3.Connection, day: str, now_ms: int) -> None:
        expired = db.execute(f"SELECT checks_json FROM requests {_EXPIRED}", (day, now_ms)).fetchall()
        for (checks_json,) in expired:
            self._unreserve(db, day, checks_json)
        db.execute(f"UPDATE requests SET state = 'expired', checks_json = '[]' {_EXPIRED}", (day, now_ms))

    @staticmethod
    def _state(db: sqlite3.Connection, day: str, request_id: str) -> tuple[RequestState, str] | None:
        row = db.execute(
            "SELECT state, checks_json FROM requests WHERE day = ? AND request_id = ?", (day, request_id)
        ).fetchone()
        return None if row is None else (cast("RequestState", row[0]), row[1])

    @staticmethod
    def _balance(db: sqlite3.Connection, day: str, scope: str, metric: str) -> tuple[int, int]:
        query = "SELECT spent, reserved FROM balances WHERE day = ? AND scope = ? AND metric = ?"
        row = db.execute(query, (day, scope, metric)).fetchone()
        return (0, 0) if row is None else (int(row[0]), int(row[1]))

    def reserve(self, req: ReserveRequest) -> ReserveOutcome:
        """Expire passed leases, then reserve every check or none (see :mod:`.base`).

        Raises:
            InvalidInputError: An amount is not a 64-bit int, or the lease (``now_ms + lease_ms``)
                ends past a signed 64-bit number of milliseconds (named ``lease_ms``).
        """
        rows = [(c.scope, c.metric, _int(c.amount, "amount")) for c in req.checks]
        expires_ms = _lease_end(req.now_ms, req.lease_ms)
        self._maybe_purge(req.day)
        with self._transaction() as db:
            self._expire(db, req.day, req.now_ms)
            known = self._state(db, req.day, req.request_id)
            if known is not None:
                return ReserveOutcome(ok=True, state=known[0], duplicate=True)
            after: dict[tuple[str, str], int] = {}  # spent + reserved per budget, then after this
            for c in req.checks:
                used = sum(self._balance(db, req.day, c.scope, c.metric))
                if c.limit is not None and used + c.amount > c.limit:
                    return ReserveOutcome(ok=False, failed=c, used=used)
                after.setdefault((c.scope, c.metric), used)
            self._add(db, req.day, rows, spent=False)
            db.execute(
                "INSERT INTO requests VALUES (?, ?, 'reserved', ?, ?)",
                (req.day, req.request_id, expires_ms, json.dumps(rows)),
            )
        for scope, metric, amount in rows:
            after[(scope, metric)] += amount
        # The usage saves the ledger a second transaction for the degradation ladder.
        return ReserveOutcome(
            ok=True, state="reserved", usage=tuple([after[(c.scope, c.metric)] for c in req.checks])
        )

    def commit(self, req: CommitRequest) -> CommitOutcome:
        """Charge actual usage once per request id, settling its reservation (see :mod:`.base`)."""
        rows = [(c.scope, c.metric, _int(c.amount, "amount")) for c in req.charges]
        counters = [(req.day, req.rollup_key, k, _int(v, f"rollup[{k!r}]")) for k, v in req.rollup.items()]
        cost = None if req.call_cost_key is None else _int(req.rollup.get("cost_nanos", 0), "cost_nanos")
        self._maybe_purge(req.day)
        with self._transaction(usage=True) as db:
            known = self._state(db, req.day, req.request_id)
            previous = None if known is None else known[0]
            if previous == "committed":
                return CommitOutcome(applied=False, previous="committed")
            if known is not None and previous == "reserved":
                self._unreserve(db, req.day, known[1])
            self._add(db, req.day, rows, spent=True)
            db.executemany(_ADD_COUNTER, counters)
            if req.conversation_mark is not None and self._set_mark(
                db, req.conversation_mark, CONVERSATION_MARK_TTL_S
            ):
                db.execute(_ADD_COUNTER, (req.day, req.rollup_key, "conversations", 1))
            db.execute(_SET_STATE, (req.day, req.request_id, "committed"))
            if cost is not None:
                db.execute("INSERT INTO call_costs VALUES (?, ?, ?)", (req.day, req.call_cost_key, cost))
            # Spent per charge and the cost sample in this transaction: no second one for alerts
            # or percentiles.
            spent = tuple([self._balance(db, req.day, s, m)[0] for s, m, _ in rows])
        return CommitOutcome(applied=True, previous=previous, spent=spent, recorded_cost=cost is not None)

    def release(self, day: str, request_id: str, now_ms: int, *, forget: bool = False) -> bool:
        """Release a live reservation; True if something was released (``forget``: see
        :meth:`LedgerStore.release <tokenbudget_core.stores.base.LedgerStore.release>`)."""
        with self._transaction() as db:
            known = self._state(db, day, request_id)
            if known is None:  # remembered, so a late reserve with this id reserves nothing
                if not forget:
                    db.execute(_SET_STATE, (day, request_id, "released"))
                return False
            if known[0] != "reserved":
                return False
            self._unreserve(db, day, known[1])
            if forget:
                db.execute("DELETE FROM requests WHERE day = ? AND request_id = ?", (day, request_id))
            else:
                db.execute(_SET_STATE, (day, request_id, "released"))
            return True

    def totals(
        self, day: str, scopes: Sequence[tuple[str, Metric]], now_ms: int
    ) -> dict[tuple[str, Metric], tuple[int, int]]:
        """``(spent, reserved)`` per scope and metric, after expiring passed leases.

        Read-only, the passed leases stay in the file and are subtracted from ``reserved`` here:
        the same figures, nothing written.
        """
        if not self.read_only:
            with self._transaction() as db:
                self._expire(db, day, now_ms)
                return {(scope, metric): self._balance(db, day, scope, metric) for scope, metric in scopes}
        with self._transaction("BEGIN") as db:
            expired: dict[tuple[str, str], int] = {}
            for (checks_json,) in db.execute(f"SELECT checks_json FROM requests {_EXPIRED}", (day, now_ms)):
                for scope, metric, amount in json.loads(checks_json):
                    expired[(scope, metric)] = expired.get((scope, metric), 0) + amount
            found: dict[tuple[str, Metric], tuple[int, int]] = {}
            for scope, metric in scopes:
                spent, reserved = self._balance(db, day, scope, metric)
                found[(scope, metric)] = (spent, reserved - expired.get((scope, metric), 0))
            return found

    def rollup(self, days: Sequence[str]) -> list[RollupRow]:
        """Attribution rows of these days, ordered by day and key (one consistent snapshot)."""
        days = check_days(days)
        rows: dict[tuple[str, str], dict[str, int]] = {}
        with self._transaction("BEGIN") as db:
            for day in dict.fromkeys(days):
                query = "SELECT rollup_key, field, value FROM rollup WHERE day = ? ORDER BY rollup_key, field"
                for key, name, value in db.execute(query, (day,)):
                    rows.setdefault((day, key), {})[name] = int(value)
        return [RollupRow(day=d, rollup_key=k, values=v) for (d, k), v in rows.items()]

    @staticmethod
    def _set_mark(db: sqlite3.Connection, key: str, ttl_s: int) -> bool:
        """Set ``key`` for ``ttl_s`` seconds if absent or expired, in the transaction of ``db``;
        True when this call set it."""
        now_ms = int(time.time() * 1000)
        row = db.execute("SELECT expires_at FROM marks WHERE key = ?", (key,)).fetchone()
        if row is not None and row[0] > now_ms:
            return False
        db.execute("INSERT OR REPLACE INTO marks VALUES (?, ?)", (key, now_ms + ttl_s * 1000))
        return True

    def mark_once(self, key: str, ttl_s: int) -> bool:
        """Set ``key`` for ``ttl_s`` seconds if absent or expired; True when this call set it."""
        with self._transaction() as db:
            return self._set_mark(db, key, ttl_s)

    def mark_once_for(self, key: str, ttl_s: int, holder: str) -> bool:
        """:meth:`mark_once`, also True when ``holder`` set the mark (see :mod:`.base`): the
        holder is a second row, ``key`` NUL ``holder``, set and expiring with the mark."""
        now_ms = int(time.time() * 1000)
        held = f"{key}\x00{holder}"
        with self._transaction() as db:
            row = db.execute("SELECT expires_at FROM marks WHERE key = ?", (key,)).fetchone()
            if row is not None and row[0] > now_ms:
                return db.execute("SELECT 1 FROM marks WHERE key = ?", (held,)).fetchone() is not None
            expires = now_ms + ttl_s * 1000
            db.executemany("INSERT OR REPLACE INTO marks VALUES (?, ?)", [(key, expires), (held, expires)])
            return True

    def record_call_cost(self, day: str, feature: str, cost_nanos: int) -> None:
        """Keep one call's cost for percentile reports."""
        row = (day, feature, _int(cost_nanos, "cost_nanos"))
        with self._transaction() as db:
            db.execute("INSERT INTO call_costs VALUES (?, ?, ?)", row)

    def call_costs(self, day: str, feature: str) -> list[int]:
        """The recorded call costs of a feature and day, oldest first."""
        with self._transaction("BEGIN") as db:
            query = "SELECT cost FROM call_costs WHERE day = ? AND feature = ? ORDER BY rowid"
            return [int(c) for (c,) in db.execute(query, (day, feature))]

    def call_costs_many(self, pairs: Sequence[CostPair]) -> dict[CostPair, list[int]]:
        """:meth:`call_costs` of every ``(day, feature)`` pair: one query per
        :data:`_PAIRS_PER_QUERY` pairs (each found through the ``(day, feature)`` index), all in
        one read transaction, so the answer is one consistent snapshot.

        Raises:
            InvalidInputError: ``pairs`` is not a sequence of pairs of strings.
            BudgetUnavailableError: The file cannot be read.
        """
        wanted = check_cost_pairs(pairs)
        found: dict[CostPair, list[int]] = {pair: [] for pair in wanted}
        for day, feature, cost in self._rows_of_pairs(wanted, "c.cost", "ORDER BY c.rowid"):
            found[(day, feature)].append(int(cost))
        return found

    def _rows_of_pairs(self, wanted: list[CostPair], what: str, tail: str) -> Iterator[tuple[str, str, int]]:
        """``(day, feature, what)`` rows of the call costs of ``wanted`` pairs (``c``), ``tail``
        ending each query: one query per :data:`_PAIRS_PER_QUERY` pairs, all in one read
        transaction (one consistent snapshot). ``INDEXED BY``: from about 400 pairs on, SQLite's
        planner would otherwise build an automatic index over the whole table for every query
        (6.4 s instead of 2.0 s for 400 pairs of a million rows). The rows stream (none is held
        here): iterate to the end at once, as the transaction and the store's lock last until
        then."""
        with self._transaction("BEGIN") as db:
            for start in range(0, len(wanted), _PAIRS_PER_QUERY):
                chunk = wanted[start : start + _PAIRS_PER_QUERY]
                query = (
                    f"WITH wanted (day, feature) AS (VALUES {', '.join(['(?, ?)'] * len(chunk))}) "
                    f"SELECT c.day, c.feature, {what} FROM wanted "
                    "JOIN call_costs AS c INDEXED BY call_costs_day_feature "
                    f"ON c.day = wanted.day AND c.feature = wanted.feature {tail}"
                )
                yield from db.execute(query, [v for pair in chunk for v in pair])

    def call_cost_counts(self, pairs: Sequence[CostPair]) -> dict[CostPair, int]:
        """How many costs each pair has now (see :class:`~.base.CallCostSnapshot`): one query per
        :data:`_PAIRS_PER_QUERY` pairs, in one read transaction.

        Raises:
            InvalidInputError: ``pairs`` is not a sequence of pairs of strings.
            BudgetUnavailableError: The file cannot be read.
        """
        wanted = check_cost_pairs(pairs)
        found = dict.fromkeys(wanted, 0)
        for day, feature, n in self._rows_of_pairs(wanted, "count(*)", "GROUP BY c.day, c.feature"):
            found[(day, feature)] = int(n)
        return found

    def scan_call_costs(
        self, counts: Mapping[CostPair, int], size: int
    ) -> Iterator[tuple[CostPair, list[int]]]:
        """The first ``counts[pair]`` costs of each pair (oldest first), in chunks of at most
        ``size``. Pairs with fewer costs than ``size`` are read together (one query per
        :data:`_PAIRS_PER_QUERY` of them, ``size`` costs in all); a larger one in chunks, each one
        query on the ``(day, feature)`` index resuming after the last row read. No read
        transaction is held between chunks."""
        pending = [(pair, n) for pair, n in counts.items() if n > 0]
        i = 0
        while i < len(pending):
            if pending[i][1] >= size:
                yield from self._scan_pair(*pending[i], size)
                i += 1
                continue
            batch: list[tuple[CostPair, int]] = []
            total = 0
            while i < len(pending) and len(batch) < _PAIRS_PER_QUERY and total + pending[i][1] <= size:
                batch.append(pending[i])
                total += pending[i][1]
                i += 1
            found = self.call_costs_many([pair for pair, _ in batch])
            for pair, n in batch:
                yield pair, found[pair][:n]

    def _scan_pair(self, pair: CostPair, n: int, size: int) -> Iterator[tuple[CostPair, list[int]]]:
        query = (
            "SELECT rowid, cost FROM call_costs WHERE day = ? AND feature = ? AND rowid > ? "
            "ORDER BY rowid LIMIT ?"
        )
        after, left = -1, n
        while left > 0:
            with self._transaction("BEGIN") as db:
                rows = db.execute(query, (*pair, after, min(size, left))).fetchall()
            if not rows:
                return
            after, left = rows[-1][0], left - len(rows)
            yield pair, [int(cost) for _, cost in rows]

    def ping(self) -> None:
        """Raise :class:`BudgetUnavailableError` if the file cannot be read."""
        with self._transaction("BEGIN") as db:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()

    def purge(self, before_day: str) -> int:
        """Delete every day before ``before_day`` (ISO ``YYYY-MM-DD``) and expired marks.

        Days from yesterday (UTC) on are never deleted, whatever ``before_day`` says: a ledger in
        some time zone (down to UTC-12) may still be living yesterday, and its balances and
        request ids (what makes a replayed commit count once) must stay. The rows go in
        transactions of at most 2,000 (other threads and processes write in between); a purge
        cut short leaves the rest for the next one.

        Returns:
            The number of rows deleted.

        Raises:
            InvalidInputError: ``before_day`` is not an ISO day.
        """
        if not (isinstance(before_day, str) and _ISO_DAY(before_day)):
            raise InvalidInputError(
                "before_day", "must be an ISO day", value=before_day, fix="pass YYYY-MM-DD, e.g. '2026-01-31'"
            )
        try:
            date.fromisoformat(before_day)
        except ValueError as e:
            raise InvalidInputError("before_day", f"is not a day: {e}", value=before_day) from e
        before_day = min(before_day, _yesterday())
        now_ms = int(time.time() * 1000)
        deleted = sum(self._purge_rows(table, before_day) for table in _DAY_TABLES)
        return deleted + self._purge_rows("marks", now_ms)

    def _purge_settled_requests(self, before_day: str) -> int:
        """Delete settled requests of the days before ``before_day`` (never yesterday or later)."""
        return self._purge_rows("settled_requests", min(before_day, _yesterday()))

    def _purge_rows(self, what: str, cutoff: str | int) -> int:
        """Delete the rows of ``what`` (see :data:`_PURGES`) past ``cutoff``, in transactions of at
        most :data:`_PURGE_BATCH` rows; the number deleted."""
        key, where = _PURGES[what]
        table = "requests" if what == "settled_requests" else what
        keys = f"({key})" if "," in key else key
        query = f"DELETE FROM {table} WHERE {keys} IN (SELECT {key} FROM {table} WHERE {where} LIMIT ?)"
        deleted = 0
        while True:
            with self._transaction() as db:
                count = db.execute(query, (cutoff, _PURGE_BATCH)).rowcount
            deleted += count
            if count < _PURGE_BATCH:
                return deleted

    def _maybe_purge(self, day: str) -> None:
        """Purge past the retention on the first operation of a newer day (before it, so a
        failing purge fails an operation that has not happened yet).

        The retention counts back from the request's day, but never from later than tomorrow
        (UTC): a ledger day is at most one day ahead of UTC (zones reach UTC+14), so a request
        carrying a far-future day (forged, mistyped, a clock gone wrong) cannot delete today.
        """
        key = self.path if self.path != ":memory:" else f":memory:{id(self)}"
        if _LAST_PURGE.get(key, "") >= day:  # the usual case
            return
        try:
            requested = date.fromisoformat(day)
        except ValueError:  # not an ISO day: nothing to compare against
            return
        latest = datetime.now(UTC).date() + timedelta(days=1)
        reference = min(requested, latest)
        if _LAST_PURGE.get(key, "") >= reference.isoformat():
            return
        if self._retention_days is not None:
            with suppress(OverflowError):  # a retention reaching before year 1: nothing is that old
                self.purge((reference - timedelta(days=self._retention_days)).isoformat())
        with suppress(OverflowError):
            self._purge_settled_requests(
                (reference - timedelta(days=self._request_retention_days)).isoformat()
            )
        _LAST_PURGE[key] = reference.isoformat()  # two threads racing here purge twice, harmlessly

    def close(self) -> None:
        """Close the connection; later operations raise :class:`BudgetUnavailableError`."""
        if self._pid != os.getpid():  # forked: the parent's connection is parked, never closed here
            with process_lock():
                if self._pid != os.getpid():
                    self._lock = threading.Lock()
                    if self._conn is not None:
                        _INHERITED.append(self._conn)
                        self._conn = None
                    self._pid = os.getpid()
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
