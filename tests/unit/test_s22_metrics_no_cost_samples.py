"""A ``/metrics`` scrape reads no per-call cost samples (it has no percentile series): on a busy
day those are one integer per call, and every scrape read and sorted them all. The report's
``percentiles=False`` is how; the report endpoints keep their p50/p95."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report
from tokenbudget_core.server import create_app
from tokenbudget_core.stores.sqlite import SQLiteStore
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class SampleReadsCounted(SQLiteStore):
    """The real SQLite store, counting reads of per-call cost samples."""

    sample_reads = 0

    def call_costs(self, day: str, feature: str) -> list[int]:
        self.sample_reads += 1
        return super().call_costs(day, feature)

    def call_costs_many(self, pairs: Sequence[Any]) -> dict[Any, list[int]]:
        self.sample_reads += 1
        return super().call_costs_many(pairs)


def test_a_metrics_scrape_reads_no_cost_samples_and_the_report_still_has_percentiles(tmp_path: Path) -> None:
    store = SampleReadsCounted(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger = Ledger(store, alerts=[])
    for n in (100, 200, 300):
        ledger.record(Usage(input_tokens=n, output_tokens=10), model="gpt-4o-mini", feature="chat", user="u")
    with TestClient(create_app(ledger, token=TOKEN), headers=AUTH) as client:
        text = client.get("/metrics").text
        assert 'tokenbudget_spend_usd_today_by_feature{feature="chat"}' in text
        assert "tokenbudget_llm_requests_today 3" in text
        assert store.sample_reads == 0
        report = client.get("/usage/report", params={"last_days": 1}).json()
    assert store.sample_reads == 1
    [chat] = [c for c in report["call_costs"] if c["feature"] == "chat"]
    assert chat["calls"] == 3


def test_a_report_without_percentiles_has_the_same_figures_and_no_call_costs() -> None:
    ledger = Ledger("memory://", alerts=[])
    ledger.record(Usage(input_tokens=100, output_tokens=10), model="gpt-4o-mini", feature="chat", user="u")
    full, lean = build_report(ledger, last_days=1), build_report(ledger, last_days=1, percentiles=False)
    assert lean.call_costs == ()
    assert full.call_costs
    assert (lean.totals, lean.per_day, lean.breakdowns) == (full.totals, full.per_day, full.breakdowns)
    with pytest.raises(InvalidInputError, match="percentiles"):
        build_report(ledger, percentiles="no")  # type: ignore[arg-type]
