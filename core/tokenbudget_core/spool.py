"""A local disk spool for usage the store could not take (fail-open, or a store lost mid-call).

Each commit that fails to reach the store is appended as one JSON line (and fsynced).
:meth:`Spool.replay` commits the lines again; commits are idempotent per request id, so a
line replayed twice (a crash mid-replay) is still counted once.

Several processes, and several ledgers in one process, may share a spool file (the default
spool is one per store, but ``$TOKENBUDGET_SPOOL`` or one ``spool_path`` names one file for
all), so the file is never read and rewritten in place, and each line names its owner:

* A spool made with ``owner=`` (a string naming its store; the ledger passes a hash of its
  store's identity) writes it into every line, and its :meth:`Spool.replay` applies only the
  lines of that owner: the lines of other owners stay in the files, in order, for their own
  ledgers' replays. A line without an owner (from a spool without one, or written by an older
  version) is applied by whichever spool replays it, as before.
* :meth:`Spool.append` (and :meth:`Spool.append_many`: a batch in one write, one fsync) writes
  under an exclusive ``flock`` of the spool file, into the file the spool path names at that
  moment (if a replay moved it away meanwhile, it opens the new one).
* :meth:`Spool.replay` runs in one process at a time (``flock`` of ``<spool>.lock``; another
  caller returns 0 at once, or waits with ``wait=True``). Under the spool file's lock it moves
  the lines to ``<spool>.replaying`` (after the lines an earlier replay left there, if any), so
  what is appended while it commits goes to a fresh spool file, and the lines still pending
  afterwards (its own the store could not take or ``most=`` left for later, and every other
  owner's) stay in ``<spool>.replaying`` for the next replay. A crash at any point leaves every
  line in one of the two files, at worst in both: replayed twice, counted once.
* ``<spool>.replaying.offset``, the replay cursor, says how far ``<spool>.replaying`` is settled
  (each line before it applied, sent before, or quarantined). A replay reads the file from there,
  only as far as it sends (``most=``), and when every line it read is settled, or those that stay
  (other owners', ours the store could not take) are all at the end of what it read, it only
  moves the cursor (a small file written to a temporary one, fsynced and renamed over it), so a
  long outage's spool replayed a share at a time costs each replay its share, not the file.
  Only when a line it settled follows one that stays (another owner's line before ours), or a
  line stays rewritten (see the once-marks below), is the rest of the file rewritten, atomically
  (the cursor removed first, durably). The file and its cursor are removed once every line is
  settled. A crash between the commits and the cursor's move re-sends those lines (counted
  once). The cursor names its file (the inode) and a hash of the bytes before its offset: one
  that is unreadable, of another file, past the end or not at a line's start is logged and
  ignored (the file replayed from its first line, re-sending, never skipping a line).
* A line the store cannot take now (:class:`~tokenbudget_core.errors.BudgetUnavailableError`,
  or a raw ``OSError``) stays, with every line after it, and the replay stops. If the replay
  had already set the line's conversation once-mark, the line stays resolved: its
  ``conversations`` counter set from the mark's answer and the mark removed (in an atomic
  rewrite of the file), so the next replay counts the conversation exactly as this one would
  have. The mark is set for the line's request (:func:`~tokenbudget_core.stores.base.mark_once_for`):
  a replay killed between the mark and the commit leaves the line as it was, and the next
  replay of that request finds its own mark and still counts the conversation (on a store
  without ``mark_once_for``, it is then counted as 0).
* A line whose commit carries its ``conversation_mark`` (what a ledger on a store that sets it
  in the commit's atomic step spools: memory, SQLite, Redis) needs none of this: its replayed
  commit sets the mark and counts the conversation, or does neither. Replayed into a store
  without that step, the mark is asked first, as for the lines above.
* Lines of other owners more than a day old (by their commit's ``now_ms``) are logged as one
  warning by a replay that reads them (how many, and the spool path; at most once an hour per
  :class:`Spool`): no ledger of their store replayed them, say because the store's identity
  changed.
* A line that does not read back as a commit (a write torn by a crash or a full disk), or
  that the store refuses for good (say ``InvalidInputError``), is moved to ``<spool>.bad`` as
  a JSON line ``{"reason": ..., "line": ...}``, logged as a warning (logger
  ``tokenbudget.spool``), and the replay goes on. It is never retried: mend it and append it
  to the spool by hand.
* An error of the spool's own files during a replay (a full disk) is logged and ends the
  replay; every line stays. So :meth:`Spool.replay` raises nothing for a bad line or a store
  in trouble.

A process forked while another of its threads replays or appends (``os.fork``, a
``multiprocessing`` child started with ``fork``) gets a spool of its own: a new lock in place of
the one that thread held, and the descriptors that thread held the files' ``flock`` through are
closed in the child (a ``flock`` belongs to the open file, shared by every copy of its
descriptor: a child keeping them would keep the lock for its whole life, blocking every other
replay and append). The fork waits for the opening or closing of such a descriptor under way.

Without ``fcntl`` (Windows) the file locks are skipped: there, give each process its own spool.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, BinaryIO

from .errors import BudgetUnavailableError, InvalidInputError, StoreRefusedError, environment_value
from .stores._fork import fresh_locks_after_fork
from .stores.base import (
    CONVERSATION_MARK_TTL_S,
    Check,
    CommitOutcome,
    CommitRequest,
    LedgerStore,
    commits_conversation_marks,
    mark_once_for,
)

if sys.platform != "win32":
    import fcntl

__all__ = ["SPOOL_VARIABLE", "Spool", "spool_from_environment"]

SPOOL_VARIABLE = "TOKENBUDGET_SPOOL"
"""The environment variable naming one spool file for every ledger of the process."""


def spool_from_environment() -> str | None:
    """``$TOKENBUDGET_SPOOL``, or ``None`` when it is unset (a ledger then spools to the default
    file of its store).

    Raises:
        InvalidInputError: The variable is set but empty or blank (field ``$TOKENBUDGET_SPOOL``):
            it would be read as unset, spooling where the deployment did not mean to.
    """
    return environment_value(
        SPOOL_VARIABLE, fix="unset it for the default spool of each store, or set it to a file path"
    )


logger = logging.getLogger("tokenbudget.spool")

_TEXT_FIELDS = ("day", "request_id", "rollup_key")

# How append() starts a line of an owner: the owner read without parsing the whole line (a
# spool shared with a ledger whose store is down may hold many lines of another owner).
_OWNER_PREFIX = re.compile(rb'\{"owner":("(?:[^"\\]|\\.)*"),')

# A line's commit time, read without parsing it: in JSON an unescaped '"now_ms":' is a key.
_NOW_MS = re.compile(rb'"now_ms":(\d+)[,}]')
_STALE_MS = 86_400_000  # other owners' lines older than this are logged by a replay
_STALE_WARN_EVERY_S = 3600.0

_CURSOR_TAIL = 4096  # the bytes before a replay cursor whose hash it keeps (see Spool._cursor)
_READ_BUFFER = 1 << 16  # a replay reads ``<spool>.replaying`` from its cursor in chunks this big
_COPY_CHUNK = 1 << 20

_Stat = tuple[int, int, int, int]
_Signature = tuple[_Stat | None, ...]
_UNKNOWN: _Stat = (-1, -1, -1, -1)  # matches no file

_LOCK_FDS: set[int] = set()
"""The descriptors this process holds (or waits for) a spool file's ``flock`` through: closed in
a forked child, which must not keep the lock (see the module's docstring)."""
_LOCK_FDS_LOCK = threading.Lock()
"""Held while such a descriptor is opened or closed, and across a fork: the set is then exact."""


class Spool:
    """An append-only JSON-lines file of pending commits, safe to share between processes.

    Args:
        path: The spool file (a relative path is resolved against the working directory once,
            here: a later ``chdir`` neither hides its lines nor splits them over two files).
            ``<path>.lock``, ``<path>.replaying``, ``<path>.replaying.offset`` and
            ``<path>.bad`` are kept next to it (see the module docstring).
        owner: Names the store this spool's lines belong to (any string; a ledger passes a hash
            of its store's identity, never a secret). Every appended line carries it, and
            :meth:`replay` applies only lines of the same owner (and lines without one), so
            ledgers of different stores can share one file. ``None``: lines without an owner.

    Raises:
        InvalidInputError: ``owner`` is not a string or ``None``.

    Example:
        >>> spool = Spool("/tmp/tokenbudget-doc/spool.jsonl", owner="3f2a9c")  # doctest: +SKIP
        >>> spool.append(request)  # doctest: +SKIP
        >>> spool.replay(store)  # doctest: +SKIP
        1
    """

    def __init__(self, path: str | os.PathLike[str], *, owner: str | None = None) -> None:
        if owner is not None and not isinstance(owner, str):
            raise InvalidInputError("owner", "must be a string naming the store, or None", value=owner)
        if not isinstance(path, str | os.PathLike) or not os.fspath(path):
            raise InvalidInputError(
                "path", f"must be a file path, got {path!r}", value=path, fix="pass the spool file's path"
            )
        self.path = Path(path).absolute()
        """The spool file, made absolute when the spool is made: a later ``chdir`` moves nothing."""
        self.owner = owner
        """The store this spool's lines belong to (``None``: lines without an owner)."""
        self._prefix = None if owner is None else ('{"owner":' + json.dumps(owner) + ",").encode()
        self._idle: _Signature | None = None  # the files as a replay left them holding no line of ours
        self.replaying_path = self.path.with_name(self.path.name + ".replaying")
        """Lines a replay took from the spool and has not settled yet (from its cursor on)."""
        self.cursor_path = self.path.with_name(self.path.name + ".replaying.offset")
        """The replay cursor: how far ``replaying_path`` is settled (see :meth:`_cursor`)."""
        self.bad_path = self.path.with_name(self.path.name + ".bad")
        """Quarantined lines: unreadable, or refused by the store for good."""
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._lock = threading.Lock()  # this object's replays; the flock covers other objects
        fresh_locks_after_fork(self, "_lock")  # a thread replaying at a fork never lets go in the child
        self._stale_warned: float | None = None  # when stale lines of other owners were last logged

    def unwritable(self) -> str | None:
        """Why the spool file could not be written here (``None`` when it can): a parent that is
        a file, or a directory this process may not write in. Creates nothing.

        Example:
            >>> Spool("/dev/null/spool.jsonl").unwritable()
            '/dev/null is not a directory'
        """
        try:
            if self.path.is_dir():
                return f"{self.path} is a directory"
            folder = self.path.parent
            while not folder.exists():  # the nearest existing folder is where append() creates the rest
                if folder.is_symlink() or folder == folder.parent:
                    return f"{folder} cannot be created"
                folder = folder.parent
            if not folder.is_dir():
                return f"{folder} is not a directory"
            target = self.path if self.path.exists() else folder
        except OSError as e:  # a folder on the way this process may not even look into
            return f"{self.path} cannot be reached by this process ({e.strerror or e})"
        if not os.access(target, os.W_OK):
            return f"{target} is not writable by this process"
        return None

    def __len__(self) -> int:
        """Pending commits of this spool: the lines in the spool and in a replay's file that its
        :meth:`replay` would take (its owner's, those without an owner, unreadable ones); other
        owners' lines are not counted."""
        count = sum(self._takes(line) for line in _lines(self.path))
        try:
            f = open(self.replaying_path, "rb", buffering=_READ_BUFFER)  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return count
        with f:  # the lines before the cursor are settled: not pending
            start = self._cursor(f, os.fstat(f.fileno()), warn=False)
            return count + sum(self._takes(line) for line, _, _ in _lines_from(f, start))

    def pending(self) -> bool:
        """True when the spool may hold commits for this spool (a stat or two): False when it is
        empty, or holds nothing but the lines of other owners a replay of this spool left."""
        if not any(_size(p) > 0 for p in (self.path, self.replaying_path)):
            return False
        return self._idle is None or self._idle != self._signature()

    def _signature(self) -> _Signature:
        return tuple(_stat_of(p) for p in (self.path, self.replaying_path))

    def _takes(self, line: bytes) -> bool:
        """Whether a replay of this spool takes ``line`` (applied, or quarantined when unreadable)."""
        if self._prefix is not None and line.startswith(self._prefix):
            return True
        try:
            owner = _owner(line)
        except (ValueError, TypeError, RecursionError):
            return True  # unreadable: whoever replays quarantines it
        return owner is None or owner == self.owner

    def append(self, req: CommitRequest, *, mark: tuple[str, int] | None = None) -> None:
        """Write one commit durably (fsynced before this returns).

        Args:
            req: The commit.
            mark: ``(key, ttl_s)`` of a once-mark the commit's ``conversations`` counter waits on
                (the store could not be asked): the replay sets it for this request and counts
                the conversation in the commit only when this request set it, so it is counted once.
        """
        self._write(_encode(req, mark, self.owner) + b"\n")

    def append_many(self, items: Sequence[tuple[CommitRequest, tuple[str, int] | None]]) -> None:
        """Write several commits durably, as :meth:`append` does each (``(req, mark)`` pairs), in
        one write under one lock with one fsync: a batch spooled during an outage waits for the
        disk once, not once a line. Nothing for no items.

        Raises:
            OSError: The spool could not be written: no line is known kept (a line written
                before the failure is replayed all the same, counted once per request id).
        """
        if items:
            self._write(b"".join([_encode(req, mark, self.owner) + b"\n" for req, mark in items]))

    def _write(self, lines: bytes) -> None:
        """Append whole ``lines`` to the spool file the path names now, under its lock, fsynced."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = _open_for_lock(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
            try:
                _flock(fd)
                if _names(fd, self.path):  # else a replay moved this file away: open the new one
                    _append(fd, lines)
                    return
            finally:
                _close_lock(fd)  # releases the lock

    def replay(
        self,
        store: LedgerStore,
        *,
        wait: bool = False,
        on_applied: Callable[[CommitRequest, CommitOutcome], object] | None = None,
        most: int | None = None,
    ) -> int:
        """Commit every spooled line to ``store`` (or the first ``most`` of this owner's); returns
        how many were applied now.

        Only this spool's owner's lines (and lines without an owner) are applied; every other
        owner's line stays in the spool, in order, for the replay of its own ledger.

        Args:
            store: Where the commits go (idempotent per day and request id).
            wait: Wait for a replay another process or thread is running, then replay what is
                left; by default return 0 at once (that replay is draining the spool).
            on_applied: Called with each commit the store applied now and its outcome: what the
                ledger does after a commit (threshold alerts, cost samples). Its errors are
                logged; the line is done.
            most: At most this many of this owner's lines are sent now; the rest wait, in
                order, for the next replay (a caller on a request's path replays a long outage's
                spool a share at a time). ``None``: all of them.
        """
        if most is not None and (isinstance(most, bool) or not isinstance(most, int) or most < 1):
            raise InvalidInputError(
                "most", "must be a positive number of lines, or None (all of them)", value=most
            )
        if not (wait is True or wait is False):
            raise InvalidInputError("wait", "must be True or False", value=wait)
        if not self.pending() or not self._lock.acquire(blocking=wait):
            return 0
        try:
            fd = _open_for_lock(self._lock_path, os.O_RDWR | os.O_CREAT)
            try:
                if not _flock(fd, wait=wait):
                    return 0
                return self._replay_locked(store, on_applied, most)
            finally:
                _close_lock(fd)
        except OSError as e:
            logger.warning("cannot replay the spool %s now: %s", self.path, e)
            return 0
        finally:
            self._lock.release()

    def _replay_locked(
        self,
        store: LedgerStore,
        on_applied: Callable[[CommitRequest, CommitOutcome], object] | None,
        most: int | None = None,
    ) -> int:
        spooled = self._take_spooled()
        try:
            f = open(self.replaying_path, "rb", buffering=_READ_BUFFER)  # noqa: SIM115 - closed below
        except FileNotFoundError:
            self._drop_cursor()  # a cursor left by a replay killed as it removed the file
            self._idle = (spooled, None)
            return 0
        applied = 0
        bad: list[tuple[bytes, str]] = []
        # The lines read this time (from the cursor to ``end``): settled (applied, quarantined,
        # sent before), or kept, in order: other owners' lines, then ours from a store gone away.
        kept: list[bytes] = []
        first_kept: int | None = None  # where the first kept line starts
        compact = False  # a kept line is followed by a settled one, or was rewritten (resolved)
        ours_left = False
        stale = 0  # other owners' lines more than a day old
        now_ms = time.time() * 1000
        sent = 0
        tmp: Path | None = None
        with f:
            st = os.fstat(f.fileno())
            start = self._cursor(f, st, warn=True)
            end = st.st_size  # unless the replay stops before the end of the file
            for line, at, after in _lines_from(f, start):
                if not self._takes(line):
                    first_kept = at if first_kept is None else first_kept
                    kept.append(line)  # another ledger's: stays for its own replay
                    stale += _older_than(line, now_ms - _STALE_MS)
                    continue
                sent += 1
                result = self._send(store, line, on_applied, bad)
                if isinstance(result, bytes):  # the store is away: this line and the rest wait
                    first_kept = at if first_kept is None else first_kept
                    kept.append(result)
                    compact |= result != line  # resolved in place: the file must say so
                    ours_left = True
                    end = after
                    break
                applied += result
                compact |= first_kept is not None  # settled after a kept line: it must go
                if most is not None and sent >= most:  # the rest wait, in order, for the next replay
                    ours_left = after < st.st_size  # (maybe only other owners' lines: the next looks)
                    end = after
                    break
            if bad:  # first: a crash after this re-sends their lines, and they come back here
                self._quarantine(bad)
            if compact:  # the kept lines, then the rest of the file as it is
                tmp = self._write_compacted(f, kept, end)
            else:  # every line before the first kept one (or the end) is settled: move the cursor
                cursor = end if first_kept is None else first_kept
                if cursor < st.st_size and cursor != start:
                    self._write_cursor(f, st, cursor)
        if tmp is not None:
            self._drop_cursor(sync=True)  # no cursor ever names the new file's bytes
            os.replace(tmp, self.replaying_path)
        elif first_kept is None and end >= st.st_size:  # every line settled
            self.replaying_path.unlink(missing_ok=True)
            self._drop_cursor()
        if stale:
            self._warn_stale(stale)
        # Only other owners' lines left: pending() says False until either file changes (the
        # spool path as it was taken: lines appended since are new, and make it differ). A
        # cursor moving alone (another owner's replay) never brings a line of ours: not looked at.
        self._idle = None if ours_left else (spooled, _stat_of(self.replaying_path))
        return applied

    def _send(
        self,
        store: LedgerStore,
        line: bytes,
        on_applied: Callable[[CommitRequest, CommitOutcome], object] | None,
        bad: list[tuple[bytes, str]],
    ) -> int | bytes:
        """Commit one line of this spool's: 1 when the store applied it now, 0 when it is settled
        otherwise (sent before, or added to ``bad``), or the line to keep (as it was, or resolved)
        when the store is away: it and the lines after it wait for the next replay."""
        try:
            req, mark, owner = _parse(line)
            if owner is not None and owner != self.owner:
                raise ValueError("'owner' is given twice, differently")  # a hand-mended line
        except (ValueError, TypeError, RecursionError) as e:
            bad.append((line, f"unreadable: {type(e).__name__}: {e}"))
            return 0
        if req.conversation_mark is not None and not commits_conversation_marks(store):
            # A store that cannot set it in the commit: asked first, as for an older line.
            mark = (req.conversation_mark, CONVERSATION_MARK_TTL_S)
            req = replace(req, conversation_mark=None)
        marked = False
        try:
            if mark is not None:  # the conversation counts if no other call counted it first
                # For this request: a replay cut short after the mark (a kill before the
                # commit) finds its own mark next time and still counts the conversation.
                first = mark_once_for(store, *mark, holder=f"{req.day}/{req.request_id}")
                req = replace(req, rollup={**req.rollup, "conversations": int(first)})
                marked = True
            outcome = store.commit(req)
        except Exception as e:  # noqa: BLE001 - the store is away, or refuses this line for good
            if isinstance(e, BudgetUnavailableError | OSError) or (
                isinstance(e, StoreRefusedError) and e.retry_later
            ):
                # The store is away (or refuses the credentials it was given: fixed, it takes
                # them): this line and the rest wait for the next replay. A mark this replay
                # set is spent: the line keeps its answer (conversations resolved, no mark), or
                # the next replay would find the mark set and count the conversation as 0.
                return _encode(req, None, owner) if marked else line
            if marked:  # quarantined as resolved, so a line mended by hand counts it right
                line = _encode(req, None, owner)
            bad.append((line, f"refused by the store: {type(e).__name__}: {e}"))
            return 0
        if not outcome.applied:
            return 0
        if on_applied is not None:
            try:
                on_applied(req, outcome)
            except Exception as e:  # noqa: BLE001 - the usage is stored: only its follow-up failed
                logger.warning("after replaying request %r: %s: %s", req.request_id, type(e).__name__, e)
        return 1

    def _cursor(self, f: BinaryIO, st: os.stat_result, *, warn: bool) -> int:
        """Where the unsettled lines of the open ``<spool>.replaying`` ``f`` (``st``: its
        ``fstat``) start: the offset its cursor file names, or 0 (every line) when there is none.

        The cursor names the file it was written for (its inode) and keeps a hash of the
        :data:`_CURSOR_TAIL` bytes before its offset: a cursor that is unreadable, names another
        file, points past the end or not at a line's start, or whose bytes changed, is ignored
        (logged with ``warn``): the file is replayed from its first line, re-sending what was
        sent (counted once), never skipping a line.
        """
        try:
            raw = self.cursor_path.read_bytes()
        except FileNotFoundError:
            return 0
        except OSError as e:
            problem: str | None = f"cannot be read ({e})"
        else:
            problem = self._cursor_problem(raw, f, st)
            if problem is None:
                offset: int = json.loads(raw)["offset"]
                return offset
        if warn:
            logger.warning(
                "spool %s: the replay cursor %s %s: replaying the file from its first line (lines "
                "sent already are sent again, and counted once)",
                self.replaying_path,
                self.cursor_path,
                problem,
            )
        return 0

    @staticmethod
    def _cursor_problem(raw: bytes, f: BinaryIO, st: os.stat_result) -> str | None:
        """What is wrong with the cursor ``raw`` of the open file ``f`` (``None``: nothing)."""
        try:
            data: Any = json.loads(raw)
            offset, inode, tail = data["offset"], data["inode"], data["tail"]
        except (ValueError, TypeError, KeyError, RecursionError):
            return "is unreadable"
        if not (type(offset) is int and type(inode) is int and isinstance(tail, str) and offset >= 0):
            return "is unreadable"
        if inode != st.st_ino:
            return "names another file"
        if offset > st.st_size:
            return f"points past the end ({offset} > {st.st_size} bytes)"
        if offset == 0:
            return None
        f.seek(max(0, offset - _CURSOR_TAIL))
        window = f.read(offset - max(0, offset - _CURSOR_TAIL))
        if not window.endswith(b"\n"):
            return f"points into a line (offset {offset})"
        if hashlib.sha256(window).hexdigest() != tail:
            return "does not match the file's bytes"
        return None

    def _write_cursor(self, f: BinaryIO, st: os.stat_result, offset: int) -> None:
        """Record durably that the lines of ``f`` before ``offset`` are settled: a temporary
        file, fsynced, then renamed over the cursor (a crash leaves the old cursor or the new)."""
        f.seek(max(0, offset - _CURSOR_TAIL))
        window = f.read(offset - max(0, offset - _CURSOR_TAIL))
        record = {"offset": offset, "inode": st.st_ino, "tail": hashlib.sha256(window).hexdigest()}
        tmp = self.cursor_path.with_name(self.cursor_path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            _write_all(fd, json.dumps(record).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.cursor_path)

    def _drop_cursor(self, *, sync: bool = False) -> None:
        """Remove the cursor; with ``sync``, durably (the folder fsynced), before a new
        ``<spool>.replaying`` takes the place of the file it was written for."""
        try:
            self.cursor_path.unlink()
        except FileNotFoundError:
            return
        if sync:
            _fsync_folder(self.cursor_path.parent)

    def _write_compacted(self, f: BinaryIO, kept: list[bytes], end: int) -> Path:
        """A temporary file (fsynced) holding ``kept`` then the lines of ``f`` from ``end`` on,
        to be renamed over ``<spool>.replaying``; returns its path."""
        tmp = self.replaying_path.with_name(self.replaying_path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            _write_all(fd, b"".join(line + b"\n" for line in kept))
            f.seek(end)
            last = b"\n"
            while chunk := f.read(_COPY_CHUNK):
                _write_all(fd, chunk)
                last = chunk[-1:]
            if last != b"\n":  # a torn last line is ended, so it never swallows an appended one
                _write_all(fd, b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        return tmp

    def _warn_stale(self, count: int) -> None:
        """Log that ``count`` lines of other owners are more than a day old (at most once an hour
        per spool object: a replay runs again whenever another ledger appends)."""
        now = time.monotonic()
        if self._stale_warned is not None and now - self._stale_warned < _STALE_WARN_EVERY_S:
            return
        self._stale_warned = now
        logger.warning(
            "spool %s: %d line(s) of other stores are more than a day old and no ledger of theirs "
            "replayed them (their store down for that long, or its identity changed: a different "
            "host, port, database or namespace). Replay them with a ledger of their store, or "
            "move them to a spool of their own",
            self.path,
            count,
        )

    def _take_spooled(self) -> _Stat | None:
        """Move the spool's lines to the replay's file, under the spool file's lock; returns what
        the spool path named once they were taken (``None``: nothing), as :func:`_stat_of`."""
        try:
            fd = _open_for_lock(self.path, os.O_RDWR)
        except FileNotFoundError:
            return None
        try:
            _flock(fd)
            if not _names(fd, self.path):
                return _UNKNOWN  # a replay elsewhere moved it meanwhile
            st = os.fstat(fd)
            if st.st_size == 0:
                return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            if not self.replaying_path.exists():
                self._drop_cursor(sync=True)  # of a file gone: it names none of these bytes
                os.replace(self.path, self.replaying_path)
                return None
            # A replay left lines (cut short by `most`, a store away, a crash): add these after
            # them; its cursor still names the settled bytes at the file's start.
            data = _read_all(fd)
            out = os.open(self.replaying_path, os.O_RDWR | os.O_APPEND)
            try:
                _append(out, data if data.endswith(b"\n") else data + b"\n")
            finally:
                os.close(out)
            os.unlink(self.path)
            return None
        finally:
            _close_lock(fd)

    def _quarantine(self, bad: list[tuple[bytes, str]]) -> None:
        records = []
        for line, reason in bad:
            text = line.decode("utf-8", "surrogateescape")
            logger.warning(
                "spool %s: a line was moved to %s (%s): %.200s", self.path, self.bad_path, reason, text
            )
            records.append(json.dumps({"reason": reason, "line": text}) + "\n")
        fd = os.open(self.bad_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            _append(fd, "".join(records).encode())
        finally:
            os.close(fd)


def _encode(req: CommitRequest, mark: tuple[str, int] | None, owner: str | None) -> bytes:
    """One spool line (without its newline): the owner first, so replays of other owners skip
    the line unparsed, then the commit and its once-mark."""
    record: dict[str, Any] = {} if owner is None else {"owner": owner}
    record.update(asdict(req))
    if req.conversation_mark is None:  # as lines were before commits carried marks
        del record["conversation_mark"]
    if mark is not None:
        record["mark"] = {"key": mark[0], "ttl_s": mark[1]}
    return json.dumps(record, separators=(",", ":")).encode()


def _older_than(line: bytes, cutoff_ms: float) -> bool:
    """Whether a line's commit was made before ``cutoff_ms`` (epoch ms); False when it names no
    time (read without parsing the line: only its ``now_ms``)."""
    match = _NOW_MS.search(line)
    return match is not None and int(match.group(1)) < cutoff_ms


def _owner(line: bytes) -> str | None:
    """The owner of a spooled line (``None``: it has none); ValueError or TypeError when the line
    is unreadable."""
    match = _OWNER_PREFIX.match(line)
    if match is not None:  # as append() writes it: only the owner is parsed
        owner: Any = json.loads(match.group(1))
        return str(owner)
    data: Any = json.loads(line)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    owner = data.get("owner")
    if owner is not None and not isinstance(owner, str):
        raise ValueError("'owner' is not a string")
    return owner


def _parse(line: bytes) -> tuple[CommitRequest, tuple[str, int] | None, str | None]:
    """One spooled line back into its commit, its once-mark and its owner (see
    :meth:`Spool.append`); ValueError or TypeError when it is not one."""
    data: Any = json.loads(line)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    owner = data.pop("owner", None)
    if owner is not None and not isinstance(owner, str):
        raise ValueError("'owner' is not a string")
    mark = data.pop("mark", None)
    if mark is not None:
        if not (
            isinstance(mark, dict)
            and isinstance(mark.get("key"), str)
            and type(mark.get("ttl_s")) is int
            and len(mark) == 2
        ):
            raise ValueError('\'mark\' is not {"key": str, "ttl_s": int}')
        mark = (mark["key"], mark["ttl_s"])
    for name in _TEXT_FIELDS:
        if not isinstance(data.get(name), str):
            raise ValueError(f"{name!r} is not a string")
    if data.get("conversation_mark") is not None and not isinstance(data["conversation_mark"], str):
        raise ValueError("'conversation_mark' is not a string")
    charges, rollup = data.get("charges"), data.get("rollup")
    if not isinstance(charges, list) or not all(isinstance(c, dict) for c in charges):
        raise ValueError("'charges' is not a list of objects")
    if not isinstance(rollup, dict):
        raise ValueError("'rollup' is not an object")
    data["charges"] = [Check(**c) for c in charges]
    return CommitRequest(**data), mark, owner


def _open_for_lock(path: Path, flags: int) -> int:
    """``os.open(path, flags, 0o666)`` for a descriptor to ``flock``, recorded for forks."""
    with _LOCK_FDS_LOCK:
        fd = os.open(path, flags, 0o666)
        _LOCK_FDS.add(fd)
    return fd


def _close_lock(fd: int) -> None:
    """Close a descriptor from :func:`_open_for_lock` (releasing its lock)."""
    with _LOCK_FDS_LOCK:
        _LOCK_FDS.discard(fd)
        os.close(fd)


def _before_fork() -> None:
    _LOCK_FDS_LOCK.acquire()


def _after_fork_in_parent() -> None:
    _LOCK_FDS_LOCK.release()


def _after_fork_in_child() -> None:
    """The child closes its copies of the parent's lock descriptors: the parent's threads that
    hold them release the locks when they close theirs (the child never had them to release)."""
    for fd in _LOCK_FDS:
        with contextlib.suppress(OSError):  # already closed: nothing of the lock is left here
            os.close(fd)
    _LOCK_FDS.clear()
    _LOCK_FDS_LOCK.release()  # taken for the fork by this very thread


if hasattr(os, "register_at_fork"):  # POSIX; there is no fork elsewhere
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
    )


def _flock(fd: int, *, wait: bool = True) -> bool:
    """An exclusive lock of the open file ``fd`` (released when it is closed); False if busy."""
    if sys.platform == "win32":
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _names(fd: int, path: Path) -> bool:
    """True when ``path`` still names the open file ``fd``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    fst = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino)


def _append(fd: int, data: bytes) -> None:
    """Append ``data`` to an ``O_APPEND`` file and fsync it; a torn last line is ended first, so
    it never swallows the new one."""
    size = os.fstat(fd).st_size
    if size:
        os.lseek(fd, size - 1, os.SEEK_SET)
        if os.read(fd, 1) != b"\n":
            data = b"\n" + data
    _write_all(fd, data)
    os.fsync(fd)


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _lines_from(f: BinaryIO, start: int) -> Iterator[tuple[bytes, int, int]]:
    """The lines of the open file ``f`` from the offset ``start`` on, read as far as they are
    asked for: each without its newline, with the offsets where it starts and where the next
    begins (blank lines are skipped)."""
    f.seek(start)
    at = start
    for raw in f:
        after = at + len(raw)
        line = raw[:-1] if raw.endswith(b"\n") else raw  # a torn last line has none
        if line.strip():
            yield line, at, after
        at = after


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_folder(folder: Path) -> None:
    """Make a removal or rename in ``folder`` durable (where folders can be opened: POSIX)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _lines(path: Path) -> list[bytes]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return [line for line in data.split(b"\n") if line.strip()]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # missing, or a path that cannot be a file (a parent that is a file): nothing spooled
        return 0


def _stat_of(path: Path) -> _Stat | None:
    """A file's device, inode, size and mtime (``None``: no such file)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
