"""p50/p95 cost per call count model calls, not cache hits (an answer from a cache is no call)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report
from tokenbudget_core.usage import Usage


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_hits_leave_the_cost_per_call_alone(store: str, tmp_path: Path) -> None:
    ledger = Ledger("memory://" if store == "memory" else f"sqlite:///{tmp_path / 'l.db'}")
    paid = Usage(input_tokens=100, output_tokens=10)
    charged = ledger.record(paid, model="gpt-4o-mini", feature="f", user="u")
    for _ in range(2):  # two answers from a cache, each recorded with what it saved
        ledger.record(Usage(requests=1), model="gpt-4o-mini", feature="f", user="u", cache_hit=True,
                      saved_usd=charged.cost_usd)  # fmt: skip
    big = Usage(requests=3, input_tokens=300, output_tokens=30)  # a batch of three calls
    ledger.record(big, model="gpt-4o-mini", feature="f", user="u")
    ledger.record(Usage(requests=3), model="gpt-4o-mini", feature="f", user="u", cache_hit=True)
    report = build_report(ledger)
    (stats,) = [s for s in report.call_costs if s.feature == "f"]
    assert stats.calls == 4  # the paid call and the batch's three; no hit
    assert stats.p50_usd == charged.cost_usd
    assert stats.p50_usd is not None
    assert stats.p50_usd > Decimal(0)
    assert stats.p95_usd == charged.cost_usd
    assert report.totals.cache_hits == 5  # the hits are still counted, apart
    ledger.close()
