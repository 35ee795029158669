"""Stores in a process forked while another thread was inside one of their calls (or an import).

``fork()`` copies only the thread that called it: a lock another thread held at that moment is
held forever in the child, a batch that thread was sending is "being sent" forever, and its
sockets and connections are the parent's. Each store that holds a lock registers itself here
(:func:`reset_after_fork`, through a weak reference: registering keeps no store alive), and the
child, right after the fork and before any other thread exists in it, calls every live store's
``_after_fork_in_child()``: fresh locks, an empty batch, no connection of the parent's (the next
call opens its own).

A store registered with ``quiesce=True`` (one whose lock is never held while waiting on a
network) is also held still across the fork: the forking thread takes its lock just before
``fork()`` and the parent lets go right after, so the call another thread was making finishes
first and the child's copy (memory, SQLite's own lock bookkeeping) is never caught half way.
While a fork waits, new calls of such stores wait for it (:func:`fork_clear`, before they take
their lock): only the calls under way finish first, so threads taking turns on a stalled store
(SQLite waiting on another process's write lock) cannot starve the fork. The wait is bounded by
about the store's ``_timeout_s`` (every store's counted from the same start, so a fork waits
about the longest); past that the fork goes on without the store, and the child still never
uses the parent's connection (it opens its own).
A call that stalls is waiting for SQLite's lock, which it does not hold while it waits.

:func:`process_lock` serves stores that also check the pid before taking their lock (for a fork
that ran no hooks, such as one made by C code): a lock created in this process, so no thread
of the parent can have left it held.

:func:`fresh_locks_after_fork` serves objects other than stores (the ledger's replay and orphan
locks): the child gets new locks in their place, as a thread of the parent may have held them at
the fork (replaying the spool), and no thread of the child ever will release them.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import threading
import time
import weakref
from typing import Protocol

__all__ = ["fork_clear", "fresh_locks_after_fork", "process_lock", "reset_after_fork"]


class _ForkAware(Protocol):
    _lock: threading.Lock

    def _after_fork_in_child(self) -> None: ...


_STORES: set[weakref.ref[_ForkAware]] = set()
"""One entry per live store (removed when it is collected): one fork hook for all of them, not
one per store ever made. A plain set of references: ``set.copy()`` is atomic, so a store made
or collected in another thread during a fork never breaks the iteration."""
_QUIESCED: set[weakref.ref[_ForkAware]] = set()
_HELD: list[threading.Lock] = []
"""The stores' locks the forking thread holds, from just before the fork to just after."""
_PROCESS_LOCKS: dict[int, threading.Lock] = {}
_FRESH_LOCKS: dict[weakref.ref[object], tuple[str, ...]] = {}
"""Objects whose named locks a child replaces (:func:`fresh_locks_after_fork`), by weak reference."""
_NO_FORK = threading.Event()
"""Set except while a fork waits for the stores' locks: a store call about to take its lock
waits (:func:`fork_clear`) instead, so the one call under way ends and the fork takes the lock
next (a lock is not fair: threads calling a stalled store would otherwise keep taking it)."""
_NO_FORK.set()


def fork_clear(seconds: float) -> None:
    """Wait (up to ``seconds``) while a fork is waiting for the stores' locks: a store calls this
    before taking its lock, so a fork is never starved by threads taking turns on it."""
    if not _NO_FORK.is_set():
        _NO_FORK.wait(max(0.0, seconds))


def reset_after_fork(store: _ForkAware, *, quiesce: bool = False) -> None:
    """Call ``store._after_fork_in_child()`` in every child forked while ``store`` is alive;
    with ``quiesce``, hold ``store._lock`` across each fork (see the module's docstring)."""
    ref = weakref.ref(store, _forget)
    _STORES.add(ref)
    if quiesce:
        _QUIESCED.add(ref)


def fresh_locks_after_fork(owner: object, *names: str) -> None:
    """Give every child forked while ``owner`` is alive new ``threading.Lock()``s as the attributes
    ``names`` of ``owner`` (registering keeps ``owner`` alive no longer)."""
    _FRESH_LOCKS[weakref.ref(owner, _forget_owner)] = names


def _forget_owner(ref: weakref.ref[object]) -> None:
    _FRESH_LOCKS.pop(ref, None)


def _forget(ref: weakref.ref[_ForkAware]) -> None:
    _STORES.discard(ref)
    _QUIESCED.discard(ref)


def process_lock() -> threading.Lock:
    """A lock of this process's own: created here, never inherited from a parent."""
    pid = os.getpid()
    lock = _PROCESS_LOCKS.get(pid)
    if lock is None:  # setdefault is atomic: two threads racing here get the same lock
        lock = _PROCESS_LOCKS.setdefault(pid, threading.Lock())
    return lock


def _live(refs: set[weakref.ref[_ForkAware]]) -> list[_ForkAware]:
    stores = [ref() for ref in refs.copy()]
    return [store for store in stores if store is not None]


def _finish_imports() -> None:
    """Wait for the imports other threads have under way (the package imports genai-prices'
    data, ~0.4 s, on the first price lookup): a module half-imported at the fork stays locked
    forever in the child, whose first import of it would never return."""
    deadline = time.monotonic() + _IMPORT_WAIT_S
    while time.monotonic() < deadline:  # again: an import that finished may start the next one
        busy = [
            name
            for name, module in list(sys.modules.items())
            if getattr(getattr(module, "__spec__", None), "_initializing", False)
            and _imported_elsewhere(name)
        ]
        if not busy:
            return
        for name in busy:
            with contextlib.suppress(Exception):  # its importer sees its own error; the fork goes on
                importlib.import_module(name)  # waits for that module's lock: its import finished
        time.sleep(0.001)  # let the importing thread start its next import, if it has one


def _imported_elsewhere(name: str) -> bool:
    """Another thread holds ``name``'s import lock (the forking thread's own imports, a fork made
    while importing, are not waited for: they cannot finish before the fork)."""
    bootstrap = getattr(importlib, "_bootstrap", None)
    ref = getattr(bootstrap, "_module_locks", {}).get(name)
    lock = ref() if callable(ref) else None
    owner = getattr(lock, "owner", None)
    return owner is not None and owner != threading.get_ident()


_IMPORT_WAIT_S = 10.0
"""The longest a fork waits for other threads' imports (one that never ends must not block it)."""


_LEAST_WAIT_S = 0.25
"""What a fork waits at least for each store's lock, whatever the others' waits took."""


def _before_fork() -> None:
    _finish_imports()  # first: an importing thread may need a store's lock to finish
    # Each other thread holds at most one store's lock at a time and never waits for another
    # while holding it: taking them one after another cannot deadlock. A store's wait is bounded
    # by its ``_timeout_s`` (when it has one). New calls wait while the fork does (_NO_FORK:
    # a lock is not fair, and threads calling a stalled store would keep taking it), so the
    # fork takes each lock once the call under way ends, within about its timeout_s. Past
    # that, the fork goes on without holding the store still (see the module's docstring).
    # All the stores' waits run from one start: the fork waits about the longest timeout_s. Yet
    # each store gets at least _LEAST_WAIT_S of its own: a healthy store's call ends in
    # milliseconds, and a fork made inside its write transaction would leave the child's copy of
    # SQLite's in-process locks held for good (every call in the child "database is locked").
    start = time.monotonic()
    _NO_FORK.clear()  # new calls wait: only the ones under way finish before the fork
    for store in _live(_QUIESCED):
        lock = store._lock
        wait = getattr(store, "_timeout_s", None)
        if wait is None:
            lock.acquire()
        else:  # the call under way ends within its timeout_s (and a little)
            own = min(float(wait) * 1.5 + 0.1, threading.TIMEOUT_MAX)
            left = own - (time.monotonic() - start)
            if not lock.acquire(timeout=max(min(own, _LEAST_WAIT_S), left)):
                continue
        _HELD.append(lock)


def _after_fork_in_parent() -> None:
    while _HELD:
        _HELD.pop().release()
    _NO_FORK.set()


def _after_fork_in_child() -> None:
    # Only the forking thread exists in the child: nothing adds to or removes from the sets now.
    _HELD.clear()  # (each store replaces the lock the forking thread took)
    _NO_FORK.set()
    _PROCESS_LOCKS.clear()  # the parent's (one may be held; its pid may come back in a grandchild)
    for store in _live(_STORES):
        store._after_fork_in_child()
    for ref, names in list(_FRESH_LOCKS.items()):
        owner = ref()
        for name in names if owner is not None else ():
            setattr(owner, name, threading.Lock())


if hasattr(os, "register_at_fork"):  # POSIX; there is no fork elsewhere
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
    )
