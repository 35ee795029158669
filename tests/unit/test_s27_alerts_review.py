"""Alerts (review s27 C): the memo of sent alerts under threads, webhooks with non-ASCII URLs, the
refusing alert of a call a fresh budget refuses too, late usage for an old day, async sinks."""

from __future__ import annotations

import asyncio
import http.server
import logging
import random
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from tokenbudget_core import Ledger
from tokenbudget_core.alerts import Alert, Webhook, flush
from tokenbudget_core.budgets import BudgetPolicy, Ladder
from tokenbudget_core.errors import BudgetExceededError, InvalidInputError
from tokenbudget_core.ledger import ALERT_MARK_TTL_S
from tokenbudget_core.usage import Usage

POLICY = BudgetPolicy(user_daily_tokens=1000, ladder=Ladder(soft_refusal=None))


def test_threads_recording_late_usage_for_many_days_never_see_an_error_after_the_charge() -> None:
    """Threads adding and dropping days of the alert memo at once: record() raised a bare
    RuntimeError ('dictionary changed size during iteration') after the store had charged."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # makes the threads interleave often enough to meet the race
    ledger = Ledger("memory://", policy=POLICY, alerts=[lambda a: None])
    now, failures, charged = time.time(), [], []

    def work(k: int) -> None:
        rng = random.Random(k)
        for i in range(1500):
            user, at = f"u{k}-{i}", now - rng.randrange(0, 60) * 86_400
            try:
                ledger.record(Usage(input_tokens=900, output_tokens=0), model="gpt-4o", user=user, at=at)
                charged.append(1)
            except Exception as e:  # noqa: BLE001 - what the test looks for
                failures.append(e)

    try:
        threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert failures == []
    assert len(charged) == 8 * 1500


class _Hook(http.server.BaseHTTPRequestHandler):
    paths: list[str] = []  # noqa: RUF012 - one server per test, reset there

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).paths.append(self.path)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def hook_url() -> Iterator[str]:
    _Hook.paths = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_webhook_url_with_a_non_ascii_path_and_query_is_sent_percent_encoded(hook_url: str) -> None:
    """Before: accepted, then every POST failed in http.client and was retried for ever."""
    ledger = Ledger(
        "memory://", policy=POLICY, alerts=[Webhook(hook_url + "/alerts/équipe?canal=événements")]
    )
    ledger.record(Usage(input_tokens=850, output_tokens=0), model="gpt-4o", user="u")
    assert flush(10) == 0
    assert _Hook.paths == ["/alerts/%C3%A9quipe?canal=%C3%A9v%C3%A9nements"]


def test_a_call_a_fresh_budget_refuses_too_does_not_use_up_the_days_refusing_alert() -> None:
    """A 970-token call against 1,000 (the default ladder soft-refuses from 97%) was told as the
    budget 'refusing calls at 0%', and the real refusal later that day was never told."""
    got: list[Alert] = []
    ledger = Ledger("memory://", policy=BudgetPolicy(user_daily_tokens=1000), alerts=[got.append])
    with pytest.raises(BudgetExceededError):
        ledger.reserve(model="gpt-4o", input_tokens=970, max_output_tokens=0, user="u")
    assert got == []
    ledger.record(Usage(input_tokens=960, output_tokens=0), model="gpt-4o", user="u")
    with pytest.raises(BudgetExceededError):
        ledger.reserve(model="gpt-4o", input_tokens=20, max_output_tokens=0, user="u")
    assert [(a.refusing, a.used) for a in got if a.refusing] == [(True, "960")]


def test_a_call_filling_the_budget_exactly_with_soft_refusal_at_one_is_not_told_refusing() -> None:
    got: list[Alert] = []
    policy = BudgetPolicy(user_daily_tokens=1000, ladder=Ladder(soft_refusal=1.0))
    ledger = Ledger("memory://", policy=policy, alerts=[got.append])
    with pytest.raises(BudgetExceededError):
        ledger.reserve(model="gpt-4o", input_tokens=1000, max_output_tokens=0, user="u")
    assert got == []


def test_late_usage_for_a_day_within_the_marks_lifetime_does_not_send_its_alerts_again(
    tmp_path: Path,
) -> None:
    """The store kept alert marks 3 days: a late event for a 4-day-old day sent its 80% alert again."""
    start = datetime(2026, 11, 20, 12, tzinfo=UTC).timestamp()
    now = [start]
    got: list[Alert] = []
    url = f"sqlite:///{tmp_path / 'b.db'}"
    with mock.patch("time.time", side_effect=lambda: now[0]):  # the wall clock the store's marks expire by
        Ledger(url, policy=POLICY, alerts=[got.append], clock=lambda: now[0]).record(
            Usage(input_tokens=850, output_tokens=0), model="gpt-4o", user="u"
        )
        now[0] = start + 6 * 86_400  # a restarted worker records a queued event of that day
        later = Ledger(url, policy=POLICY, alerts=[got.append], clock=lambda: now[0])
        later.record(Usage(input_tokens=10, output_tokens=0), model="gpt-4o", user="u", at=start + 3600)
    assert [(a.day, a.threshold) for a in got] == [("2026-11-20", 0.8)]


def test_usage_for_a_day_older_than_the_marks_lifetime_sends_no_alert() -> None:
    got: list[Alert] = []
    ledger = Ledger("memory://", policy=POLICY, alerts=[got.append])
    old = time.time() - ALERT_MARK_TTL_S - 86_400
    charge = ledger.record(Usage(input_tokens=990, output_tokens=0), model="gpt-4o", user="u", at=old)
    assert charge.applied
    assert got == []
    ledger.record(Usage(input_tokens=990, output_tokens=0), model="gpt-4o", user="u")  # today's: sent
    assert [a.threshold for a in got] == [0.8]


def test_an_async_alert_sink_is_refused_naming_the_fix() -> None:
    async def notify(alert: Alert) -> None:
        return None

    with pytest.raises(
        InvalidInputError, match=r"alerts\[1\]: is an async function.*run_coroutine_threadsafe"
    ):
        Ledger("memory://", policy=POLICY, alerts=["log", notify])


def test_a_sink_returning_an_awaitable_is_logged_as_not_delivered(caplog: pytest.LogCaptureFixture) -> None:
    async def notify(alert: Alert) -> None:
        return None

    def sneaky(alert: Alert) -> Any:  # a plain function handing back a coroutine
        return notify(alert)

    ledger = Ledger("memory://", policy=POLICY, alerts=[sneaky])
    with caplog.at_level(logging.ERROR, logger="tokenbudget.alerts"):
        ledger.record(Usage(input_tokens=850, output_tokens=0), model="gpt-4o", user="u")
    assert "not delivered" in caplog.text
    assert "awaitable" in caplog.text
    asyncio.run(asyncio.sleep(0))  # no 'coroutine was never awaited' warning left behind (closed)
