"""A callable alert sink that raises (a transient Slack or pager error) is called once per alert
(the alert is marked sent in the store first, so it fires once across processes): the ERROR it
leaves on ``tokenbudget.alerts`` carries the alert's content (its text, budget, threshold and id),
so the alert is not lost without a trace, and the other sinks still get it."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tokenbudget_core.alerts import Alert
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.usage import Usage

NOON = datetime(2026, 11, 24, 12, 0, tzinfo=UTC).timestamp()


def test_a_raising_sink_leaves_the_alert_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[Alert] = []
    delivered: list[Alert] = []

    def pager(alert: Alert) -> None:
        calls.append(alert)
        if len(calls) == 1:
            raise ConnectionError("pager: 503 Service Unavailable")

    ledger = Ledger(
        "memory://",
        policy=BudgetPolicy(daily_usd=Decimal("1")),
        clock=lambda: NOON,
        alerts=[pager, delivered.append],
    )
    with caplog.at_level(logging.WARNING, logger="tokenbudget.alerts"):
        for _ in range(41):  # $0.025 each: 80% at the 32nd, 100% at the 40th
            ledger.record(Usage(input_tokens=10_000, output_tokens=0), model="gpt-4o")

    assert [a.threshold for a in calls] == [0.8, 1.0]  # each alert offered once
    assert [a.threshold for a in delivered] == [0.8, 1.0]  # the next sink got the failed one too
    lost = calls[0]
    failures = [r for r in caplog.records if r.name == "tokenbudget.alerts" and r.levelno == logging.ERROR]
    assert len(failures) == 1
    message = failures[0].getMessage()
    assert lost.text in message  # budget, scope, threshold, amounts, day
    assert "daily_usd" in message
    assert "80%" in message
    assert lost.id in message
    assert failures[0].exc_info is not None  # and why it failed
    assert "503 Service Unavailable" in caplog.text
