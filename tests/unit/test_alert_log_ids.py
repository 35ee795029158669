"""Budget alerts' log lines show end users' ids escaped: an id cannot forge a log line."""

from __future__ import annotations

import logging

import pytest

from tokenbudget_core.alerts import Alert
from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.usage import Usage

FORGED = "bob\nERROR tokenbudget.auth: token=hunter2\x1b[2J\u2028"


def test_the_logged_alert_is_one_line_with_the_id_escaped(caplog: pytest.LogCaptureFixture) -> None:
    ledger = Ledger(
        "memory://",
        policy=BudgetPolicy(features={"chat": FeatureBudget(user_daily_tokens=100)}),
        alerts=["log"],
    )
    with caplog.at_level(logging.WARNING, logger="tokenbudget.alerts"):
        ledger.record(
            Usage(input_tokens=90, output_tokens=5), model="gpt-4o-mini", feature="chat", user=FORGED
        )
    lines = [r.getMessage() for r in caplog.records if r.name == "tokenbudget.alerts"]
    assert lines, "the 80% alert was logged"
    for line in lines:
        assert line.isprintable()
        assert "user=bob\\nERROR tokenbudget.auth: token=hunter2\\x1b[2J\\u2028" in line


def test_the_alert_keeps_the_id_as_given() -> None:
    alert = Alert(
        day="2026-11-24", budget="user_daily_tokens", scope=f"feature=chat user={FORGED}", threshold=0.8,
        used="90", limit="100", feature="chat", user=FORGED,
    )  # fmt: skip
    assert alert.user == FORGED  # sinks get the id itself, for lookups
    assert "\n" not in alert.text
    assert (
        "user=café"
        in Alert(day="2026-11-24", budget="b", scope="user=café", threshold=0.8, used="1", limit="2").text
    )  # printable letters are left as they are


def test_ids_that_only_look_alike_are_shown_apart() -> None:
    from tokenbudget_core.visible import visible

    assert visible("bob\u00a0") != visible("bob")  # a trailing no-break space
    assert visible("bob\u3164") != visible("bob")  # a Hangul filler shows nothing
    assert visible("zoë café 用户") == "zoë café 用户"  # letters stay as they are
