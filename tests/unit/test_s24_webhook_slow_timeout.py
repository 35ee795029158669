"""A webhook that is slow, not down (it takes each POST and answers after the client's timeout),
does not hold the later alerts back for ever: after ``ATTEMPTS`` POSTs of an alert got no answer
in time, that alert is logged with its content as delivery uncertain and the next one is sent.
``Webhook(url, timeout_s=...)`` sets the timeout per webhook (URL strings keep working, with the
default). A real HTTP server on 127.0.0.1; ordered by events, no timing assertion."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tokenbudget_core import alerts
from tokenbudget_core.alerts import ATTEMPTS, DEFAULT_TIMEOUT_S, Webhook, resolve_sinks
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.usage import Usage

NOON = datetime(2026, 11, 24, 12, 0, tzinfo=UTC).timestamp()


class SlowHook(ThreadingHTTPServer):
    """Takes every POST; holds back its answer to the 80% alert until ``release`` is set (long
    after the client's timeout), answers the others at once."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[dict[str, Any]] = []
        self.release = threading.Event()
        self.answered = threading.Event()  # an alert other than the 80% one was answered


class _Handler(BaseHTTPRequestHandler):
    server: SlowHook

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.received.append(body)
        if body["threshold"] == 0.8:
            self.server.release.wait(60)  # the client gave up long before
        try:
            self.send_response(204)
            self.end_headers()
        except OSError:
            pass
        if body["threshold"] != 0.8:
            self.server.answered.set()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def slow_hook() -> Iterator[SlowHook]:
    server = SlowHook()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.release.set()
        alerts.flush(timeout=10)
        server.shutdown()
        server.server_close()


def test_a_slow_webhook_gets_the_next_alert_and_the_late_one_is_logged(
    slow_hook: SlowHook, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://bot:s3cret@127.0.0.1:{slow_hook.server_address[1]}/T0/SECRETPATH"
    hook = Webhook(url, timeout_s=0.2)
    ledger = Ledger(
        "memory://", policy=BudgetPolicy(daily_usd=Decimal("1")), clock=lambda: NOON, alerts=[hook]
    )
    with caplog.at_level(logging.INFO, logger="tokenbudget.alerts"):
        for _ in range(40):  # $0.025 each: 80% at the 32nd, 100% at the 40th
            ledger.record(Usage(input_tokens=10_000, output_tokens=0), model="gpt-4o")
        assert slow_hook.answered.wait(60), "the 100% alert never reached the webhook"

    thresholds = [body["threshold"] for body in slow_hook.received]
    assert thresholds == [0.8] * ATTEMPTS + [1.0]  # tried ATTEMPTS times, then the next one
    late_id = slow_hook.received[0]["id"]
    uncertain = [r.getMessage() for r in caplog.records if "delivery uncertain" in r.getMessage()]
    assert len(uncertain) == 1
    assert late_id in uncertain[0]
    assert "budget daily_usd for all calls passed 80%" in uncertain[0]  # the alert's content
    assert "s3cret" not in caplog.text
    assert "SECRETPATH" not in caplog.text


def test_a_webhook_url_gets_the_default_timeout_and_a_webhook_its_own() -> None:
    (from_url,) = resolve_sinks(["https://hooks.example.com/tb"])
    assert isinstance(from_url, Webhook)
    assert from_url.timeout_s == DEFAULT_TIMEOUT_S >= 10
    own = Webhook("https://hooks.example.com/tb", timeout_s=30)
    (kept,) = resolve_sinks([own])
    assert kept is own
    assert own.timeout_s == 30.0


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), True, "5"])
def test_a_timeout_that_is_not_seconds_is_refused(timeout: Any) -> None:
    with pytest.raises(InvalidInputError) as refused:
        Webhook("https://hooks.example.com/tb", timeout_s=timeout)
    assert refused.value.field == "timeout_s"


def test_a_bad_url_is_named_where_it_was_given() -> None:
    with pytest.raises(InvalidInputError) as refused:
        Webhook("https://")
    assert refused.value.field == "url"
    with pytest.raises(InvalidInputError) as listed:
        resolve_sinks(["log", "https://"])
    assert listed.value.field == "alerts[1]"
