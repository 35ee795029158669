"""``/metrics`` does not pass an unpriced model off as free: a series counts today's calls of
models without a known price (in all and by model), which the spend series leave out, and the
cost per active user is not exported for a day whose calls were all unpriced."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.testclient import TestClient

from tokenbudget_core.ledger import Ledger
from tokenbudget_core.server import create_app
from tokenbudget_core.usage import Usage

NOON = datetime(2026, 11, 24, 12, 0, tzinfo=UTC).timestamp()
USAGE = Usage(input_tokens=100_000, output_tokens=10_000)


def _metrics(ledger: Ledger) -> dict[str, str]:
    text = TestClient(create_app(ledger)).get("/metrics").text
    return dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_metrics_count_the_unpriced_calls_the_spend_leaves_out() -> None:
    ledger = Ledger("memory://", clock=lambda: NOON)
    ledger.record(USAGE, model="acme-ft-2026", unknown_model="unpriced", user="u1")
    only_unpriced = _metrics(ledger)
    assert only_unpriced["tokenbudget_unpriced_requests_today"] == "1"
    assert only_unpriced['tokenbudget_unpriced_requests_today_by_model{model="acme-ft-2026"}'] == "1"
    assert "tokenbudget_cost_per_active_user_usd_today" not in only_unpriced  # unknown, not $0

    ledger.record(USAGE, model="gpt-4o", user="u2")
    mixed = _metrics(ledger)
    assert mixed["tokenbudget_unpriced_requests_today"] == "1"
    assert mixed['tokenbudget_unpriced_requests_today_by_model{model="gpt-4o"}'] == "0"
    assert float(mixed["tokenbudget_cost_per_active_user_usd_today"]) > 0  # a lower bound, now known
