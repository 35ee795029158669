"""One operation at a time on a memory (or any object kept in step with a store), whatever mix
of threads, tasks and event loops calls it.

A conversation memory loads its transcript from a store, counts it, appends, summarises and
writes back; two operations interleaved (a ``put`` in one thread, a ``get`` in another, or the
same on two tasks awaiting a summariser) see each other half done: a message shown twice,
missed for good, or an index error. :class:`OperationLock` keeps them apart:

* sync operations take a re-entrant thread lock (a server's threads wait their turn);
* async operations take an ``asyncio.Lock`` of their event loop (its tasks in turn), then the
  same thread lock, polled so as not to block the loop (sync callers of other threads, and
  other event loops, wait for them too).

A call made from inside an operation re-enters it instead of waiting for itself: a summariser
that reads the memory it is summarising (sync in the same thread; async in the task holding the
operation or a task or thread it starts carrying its context, as ``asyncio.wait_for`` and
``asyncio.to_thread`` do); an ``asyncio.run`` inside a sync operation of the same thread; and a
blocking sync call a coroutine makes while an async operation of its own event loop is in
flight (it cannot wait for it). Entering tells the caller whether it re-entered, so that it uses
the state as the operation has it rather than reloading it. A thread started without the
context (``loop.run_in_executor``) is another caller: it waits, so an operation must not await
one that calls the object.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from contextvars import ContextVar, Token

__all__ = ["OperationLock"]

_HOLDING: ContextVar[frozenset[object]] = ContextVar("tokenbudget_operation_holds", default=frozenset())
"""The holds (of :class:`_TaskLock` s) the running task is inside: its own, and those of the task
that started it while holding them (a task copies its creator's context)."""


class OperationLock:
    """The lock of one object's operations: :meth:`operation` for sync ones, :meth:`aoperation`
    for async ones; entering either yields whether the call re-enters an operation in flight.

    Example:
        >>> lock = OperationLock()
        >>> with lock.operation() as outer_reentered:
        ...     with lock.operation() as inner_reentered:
        ...         pass
        >>> outer_reentered, inner_reentered
        (False, True)
    """

    __slots__ = ("active", "alocks", "async_thread", "lock", "sync_hold", "sync_thread")

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.active = False
        """A sync operation is in flight (read and written by the thread holding ``lock``)."""
        self.sync_thread: int | None = None
        """The thread of the outermost sync operation in flight (an ``asyncio.run`` it makes
        inside it re-enters it)."""
        self.sync_hold: object | None = None
        """The outermost sync operation's hold (in its context: what an event loop it runs, and
        the threads that loop's tasks start with their context, carry), ``None`` when none."""
        self.async_thread: int | None = None
        """The thread of the event loop whose async operation holds ``lock`` (a blocking sync
        call a coroutine of that loop makes meanwhile cannot wait for it: it re-enters)."""
        self.alocks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _TaskLock] = (
            weakref.WeakKeyDictionary()
        )

    def operation(self) -> _Operation:
        """The lock for one sync operation; entering it tells whether the call re-enters an
        operation in flight (``True``: use the state as it stands)."""
        return _Operation(self)

    def aoperation(self) -> AbstractAsyncContextManager[bool]:
        """The lock for one async operation on the running event loop; entering it tells whether
        the call re-enters an operation in flight."""
        loop = asyncio.get_running_loop()
        lock = self.alocks.get(loop)
        if lock is None:
            lock = self.alocks.setdefault(loop, _TaskLock(self))
        return lock.held()

    def in_async_operation(self) -> bool:
        """Whether the running context is inside an operation in flight that holds the lock for
        it: an async one (a hold of one of its :class:`_TaskLock` s: a sync call made by the task
        holding it, or by a task or thread it started with its context), or a sync one whose
        context it carries (a thread started by a task of an event loop run inside it)."""
        holds = _HOLDING.get()
        if not holds:
            return False
        sync_hold = self.sync_hold
        if sync_hold is not None and sync_hold in holds:
            return True
        try:
            locks = list(self.alocks.values())
        except RuntimeError:  # (a lock added for another event loop meanwhile)
            locks = []
        return any(lock.hold is not None and lock.hold in holds for lock in locks)


class _Operation:
    """One sync operation: holds the ``RLock`` (waiting for any operation in flight, sync or
    async, of another thread); ``__enter__`` returns whether the call re-enters an operation in
    flight: a sync one of its thread, an async one it was made inside (let in without the lock,
    which that operation holds, maybe in another thread), or an async one of the event loop
    running on its thread (a blocking call in a coroutine, which cannot wait for it)."""

    __slots__ = ("locked", "outer", "state", "token")

    def __init__(self, state: OperationLock) -> None:
        self.state = state
        self.outer = False
        self.locked = False
        self.token: Token[frozenset[object]] | None = None

    def __enter__(self) -> bool:
        state = self.state
        if state.in_async_operation():
            return True
        state.lock.acquire()
        self.locked = True
        self.outer = state.active
        if not self.outer:
            state.sync_thread = threading.get_ident()
            hold = state.sync_hold = object()
            self.token = _HOLDING.set(_HOLDING.get() | {hold})
        state.active = True
        return self.outer or state.async_thread is not None  # (ours: any other's waited for)

    def __exit__(self, *exc: object) -> None:
        if self.locked:
            state = self.state
            state.active = self.outer
            if not self.outer:
                state.sync_thread = None
                state.sync_hold = None
                if self.token is not None:
                    with suppress(ValueError):  # (exited in another context)
                        _HOLDING.reset(self.token)
            state.lock.release()


class _TaskLock:
    """The async lock of one event loop: an ``asyncio.Lock`` that the task holding it enters
    again without waiting, as the sync path's ``RLock`` lets its thread in, and so do the tasks
    that task starts while it holds it (awaited inside the operation, as ``asyncio.wait_for``
    runs a coroutine in a task of its own on Python 3.11). Another task waits for the operation
    in flight."""

    __slots__ = ("hold", "lock", "state")

    def __init__(self, state: OperationLock) -> None:
        self.state = state
        self.lock = asyncio.Lock()
        self.hold: object | None = None
        """The current hold (a new object each time the lock is taken), ``None`` when free."""

    @asynccontextmanager
    async def held(self) -> AsyncIterator[bool]:
        """Hold the lock, unless the running task is already inside the current hold; yields
        whether it was (re-entering the operation in flight)."""
        hold = self.hold
        state = self.state
        holds = _HOLDING.get()
        if (
            (hold is not None and hold in holds)
            or state.sync_thread == threading.get_ident()
            or (state.sync_hold is not None and state.sync_hold in holds)
        ):
            yield True  # (or an event loop run inside a sync operation, on its thread or not)
            return
        await self.lock.acquire()
        try:
            await _take(state.lock)  # sync operations (other threads) and other event loops' ones
        except BaseException:
            self.lock.release()
            raise
        state.async_thread = threading.get_ident()
        hold = self.hold = object()
        token = _HOLDING.set(_HOLDING.get() | {hold})
        try:
            yield False
        finally:
            self.hold = None
            state.async_thread = None
            state.lock.release()
            self.lock.release()
            with suppress(ValueError):  # closed in another context (a task dropped unfinished, finalised)
                _HOLDING.reset(token)


async def _take(lock: threading.RLock) -> None:
    """Take ``lock`` without blocking the event loop: try, then poll, backing off to 5 ms (a
    sync operation of another thread, or an async one of another event loop, is in flight)."""
    delay = 0.0002
    while not lock.acquire(blocking=False):
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.005)
