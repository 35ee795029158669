"""Forking a test process: the child runs a function and exits with a status the parent reads.

A child that hangs (a lock inherited held) is killed by an alarm, so the test fails instead of
hanging CI; the parent also stops waiting after a deadline and kills it.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

__all__ = ["HUNG", "call_in_thread", "fork_while_spending", "run_in_fork"]

HUNG = "hung"


def run_in_fork(child: Callable[[], object], *, timeout_s: int = 15) -> int | str:
    """Fork; in the child run ``child()`` and exit 0 (1 if it raised, its traceback on stderr).

    Returns:
        The child's exit code (1 also when it hung: its threads' tracebacks are on stderr;
        negative: killed by that signal), or :data:`HUNG` when it had to be killed from here.
    """
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            # Hung: print where, and end (exit 1); the alarm's default action is the backstop.
            faulthandler.dump_traceback_later(timeout_s, exit=True)
            signal.alarm(timeout_s + 2)
            child()
            code = 0
        except BaseException:  # noqa: BLE001 - reported by the exit status, the traceback on stderr
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + timeout_s + 10
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return HUNG
        time.sleep(0.02)


def call_in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    """Start ``fn`` in a thread; the list gets its result, or the exception it raised."""
    out: list[object] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def fork_while_spending(ledger: Any, *, threads: int, forks: int = 5) -> None:
    """Fork ``forks`` times while ``threads`` worker threads spend through ``ledger``; each child
    makes a ledger call of its own, which must return (the reviewer's case for every store)."""
    from tokenbudget_core import Usage

    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            r = ledger.reserve(model="gpt-4o", input_tokens=10, max_output_tokens=10, user="parent")
            ledger.commit(r, Usage(input_tokens=10, output_tokens=10))

    def child() -> None:
        ledger.reserve(model="gpt-4o", input_tokens=10, max_output_tokens=10, user="child")

    workers = [threading.Thread(target=busy, daemon=True) for _ in range(threads)]
    for t in workers:
        t.start()
    try:
        time.sleep(0.3)
        for _ in range(forks):
            assert run_in_fork(child, timeout_s=10) == 0
    finally:
        stop.set()
        for t in workers:
            t.join(10)
