"""An async twin that writes (``asettle``, ``acommit``, ``arecord``, ``arelease``) runs its store
call even when its caller is cancelled while the call waits for a worker thread (the default
executor busy with other work): the caller gets ``CancelledError`` at once, and the usage is still
charged (or the reservation released) once a thread is free. Before, the queued job was cancelled
with the caller: the usage was lost and the worst case held until the lease ended.

Deterministic: the default executor has one worker, held by a job waiting on an event; the order
of everything is set by that event and by awaiting a job queued behind the ledger's."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import pytest

from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.ledger import Ledger, Reservation
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")

USAGE = Usage(input_tokens=20, output_tokens=5)


async def _cancelled_while_queued(call: Callable[[], Awaitable[object]]) -> None:
    """Run ``call`` with the one worker thread busy, cancel it while its job is queued, check the
    cancel reached the caller before the job could run, then free the worker and wait for the job."""
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
    busy, free = threading.Event(), threading.Event()

    def occupy() -> None:
        busy.set()
        free.wait()

    held = loop.run_in_executor(None, occupy)
    while not busy.is_set():  # the worker has taken the blocking job (no timing: an event)
        await asyncio.sleep(0)
    task = asyncio.ensure_future(call())
    await asyncio.sleep(0)  # the task runs up to its wait for the worker: its job is queued
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not free.is_set()  # the cancel reached the caller at once, the job still queued
    free.set()
    await held
    await loop.run_in_executor(None, lambda: None)  # queued after the ledger's job: it ran


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(
        f"sqlite:///{tmp_path / 'l.db'}",
        policy=BudgetPolicy(user_daily_usd=Decimal(1)),
        spool_path=tmp_path / "spool",
        alerts=[],
    )


def _spent_and_reserved(ledger: Ledger) -> tuple[int, int]:
    day = ledger.day()
    ((spent, reserved),) = ledger.store.totals(day, [("U/u", "nanos")], ledger._now_ms()).values()
    return spent, reserved


def _requests(ledger: Ledger) -> int:
    return sum(row.values["requests"] for row in ledger.store.rollup([ledger.day()]))


def _reserve(ledger: Ledger) -> Reservation:
    return ledger.reserve(model="gpt-4o-mini", input_tokens=20, max_output_tokens=200, user="u")


@pytest.mark.parametrize("twin", ["asettle", "acommit"])
async def test_a_settle_or_commit_cancelled_while_queued_still_charges(ledger: Ledger, twin: str) -> None:
    r = _reserve(ledger)
    if twin == "asettle":
        await _cancelled_while_queued(lambda: ledger.asettle(r, USAGE))
    else:
        await _cancelled_while_queued(lambda: ledger.acommit(r, USAGE))
    spent, reserved = _spent_and_reserved(ledger)
    assert reserved == 0  # the worst case is not held until the lease
    assert spent > 0
    assert _requests(ledger) == 1
    ledger.close()


async def test_a_record_cancelled_while_queued_still_records(ledger: Ledger) -> None:
    await _cancelled_while_queued(lambda: ledger.arecord(USAGE, model="gpt-4o-mini", user="u"))
    assert _spent_and_reserved(ledger)[0] > 0
    assert _requests(ledger) == 1
    ledger.close()


async def test_a_release_cancelled_while_queued_still_releases(ledger: Ledger) -> None:
    _reserve(ledger)
    r = _reserve(ledger)
    held = _spent_and_reserved(ledger)[1]
    await _cancelled_while_queued(lambda: ledger.arelease(r))
    assert _spent_and_reserved(ledger) == (0, held // 2)
    ledger.close()


async def test_a_failure_after_the_caller_was_cancelled_is_logged(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="tokenbudget.ledger"):
        await _cancelled_while_queued(
            lambda: ledger.arecord(USAGE, model="no-such-model", request_id="req-9")
        )
    [line] = [r for r in caplog.records if "cancelled" in r.getMessage()]
    assert "record of request 'req-9'" in line.getMessage()
    assert "UnknownModelError" in line.getMessage()
    ledger.close()
