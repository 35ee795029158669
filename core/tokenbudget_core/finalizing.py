"""Event ends that arrive from the garbage collector run in a thread of their own.

A stream its consumer abandoned ends its LLM event when the generator is closed. When the
abandoned generator sits in a reference cycle (a kept exception's traceback, an object that
refers to itself), Python's cyclic garbage collector closes it, at whatever allocation happened
to trigger a collection, in the thread that made that allocation: possibly while that thread is
half way through a ledger call, holding a lock of a handler, of the in-memory store, or of a
store's client library (redis-py's connection pool). Settling the abandoned call right there
would wait for that lock forever: the thread holding it is the one waiting.

The framework adapters ask :func:`collecting` when an event ends; in a collection they hand the
work (with what must be read there and then, such as the stream's last chunk) to :func:`defer`,
which queues it for a worker thread: a queue put takes no lock a collection could interrupt.
The worker runs it a moment later, outside the collecting thread's locks, so the abandoned call
is charged or released all the same. :func:`wait_deferred` waits for what was queued; an
exiting process does (up to :data:`EXIT_WAIT_S`), a ``multiprocessing`` worker included; a
forked child drops what its parent queued. A worker a pool terminates (leaving
``with multiprocessing.Pool() as pool:`` calls ``terminate()``) runs no exit code at all: close
and join the pool to have its workers settle what they deferred.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import queue
import sys
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["collecting", "defer", "run_at_worker_exit", "start_worker", "wait_deferred"]

logger = logging.getLogger("tokenbudget.finalizing")

_collector: int | None = None
"""The thread running the cyclic garbage collector now (one at a time), else ``None``."""


def _note_collection(phase: str, info: dict[str, int]) -> None:
    global _collector
    _collector = threading.get_ident() if phase == "start" else None


gc.callbacks.append(_note_collection)


def collecting() -> bool:
    """Whether this thread is running a garbage collection now (finalizers included): code
    that takes locks must :func:`defer` its work instead."""
    return _collector is not None and _collector == threading.get_ident()


_Work = tuple[Callable[..., Any], tuple[Any, ...]]
_queue: queue.SimpleQueue[_Work] = queue.SimpleQueue()
_worker_started = False


def _after_fork_in_child() -> None:
    global _worker_started, _queue
    _worker_started = False  # the worker thread did not come along
    _queue = queue.SimpleQueue()  # what the parent deferred is the parent's to run


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def defer(fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(*args)`` in the worker thread (started by :func:`start_worker`, which the
    adapters call as a handler is made and as each call starts). Safe inside a collection: a
    ``SimpleQueue`` put takes no lock. An exception ``fn`` raises is logged."""
    _queue.put((fn, args))


def start_worker() -> None:
    """Start this process's worker thread unless it runs (a forked child starts its own).
    Never from inside a collection: starting a thread takes the ``threading`` module's locks."""
    global _worker_started
    if _worker_started:
        return
    run_at_worker_exit(_settle_at_exit, _MP_EXIT_PRIORITY)  # (with no thread, the exit runs the work)
    try:
        threading.Thread(target=_work, args=(_queue,), name="tokenbudget-deferred", daemon=True).start()
    except RuntimeError:  # no thread now: deferred work waits for the next start, or runs at exit
        return
    _worker_started = True


def _run(work: _Work) -> None:
    fn, args = work
    try:
        fn(*args)
    except Exception:
        logger.exception("tokenbudget: deferred work %r failed", getattr(fn, "__qualname__", fn))


def _work(q: queue.SimpleQueue[_Work]) -> None:
    while True:
        _run(q.get())


def wait_deferred(timeout: float | None = None) -> bool:
    """Wait until the work deferred so far has run; ``False`` when ``timeout`` seconds passed
    first. Without a worker thread (none could start), the work runs here (outside any
    collection: call it from ordinary code)."""
    if not _worker_started:
        while True:
            try:
                work = _queue.get_nowait()
            except queue.Empty:
                return True
            _run(work)
    done = threading.Event()
    _queue.put((done.set, ()))
    return done.wait(timeout)


_worker_exits: dict[Callable[[], None], int] = {}
"""What a ``multiprocessing`` worker's exit runs, and the process it was registered in."""


def run_at_worker_exit(fn: Callable[[], None], priority: int) -> None:
    """In a ``multiprocessing`` worker (which ends with ``os._exit``: no ``atexit``), have its
    exit run ``fn`` too (higher ``priority`` first), once per process. Called when there is
    something to wait for, not by an after-fork hook: a worker clears the exit finalizers it
    inherits as it starts (after that hook ran), and may import this module only after the fork."""
    pid = os.getpid()
    if _worker_exits.get(fn) == pid:
        return
    util, process = sys.modules.get("multiprocessing.util"), sys.modules.get("multiprocessing.process")
    if util is None or process is None or process.parent_process() is None:
        return  # not a multiprocessing worker: atexit runs it
    util.Finalize(None, fn, exitpriority=priority)
    _worker_exits[fn] = pid


EXIT_WAIT_S = 5.0
"""How long an exiting process waits for deferred stream ends (a stream its last collection
closed), so their reservations are settled, not left to their leases."""


def _settle_at_exit() -> None:
    if not wait_deferred(EXIT_WAIT_S):
        logger.error("tokenbudget: deferred stream ends still running after %.0f s at exit", EXIT_WAIT_S)


_MP_EXIT_PRIORITY = 20
"""Among a multiprocessing worker's exit finalizers: before the alerts' flush (10), as settling
a stream may cross an alert threshold."""

atexit.register(_settle_at_exit)
