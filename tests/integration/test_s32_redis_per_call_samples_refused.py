"""A commit or record of several calls whose charge Redis stored, but whose per-call cost samples
it refuses (another application's data under the feature's sample list: ``WRONGTYPE``), returns
its charge (logged): it never raises, or the caller would take the stored charge for one not
made, and charge it again. Against a real Redis.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import redis

from tokenbudget_core import Usage
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.ledger import Ledger

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_refused_per_call_samples_never_make_a_stored_charge_raise(
    clean_redis_url: str,
    redis_client: redis.Redis,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    mode: str,
) -> None:
    ledger = Ledger(
        clean_redis_url,
        policy=BudgetPolicy(user_daily_tokens=1_000_000),
        on_unavailable=mode,  # type: ignore[arg-type]
        spool_path=tmp_path / "s.jsonl",
        alerts=[],
    )
    redis_client.set("{tb:%s}:costs:f" % ledger.day(), "another application's")  # noqa: UP031
    with caplog.at_level(logging.WARNING, logger="tokenbudget.ledger"):
        recorded = ledger.record(
            Usage(input_tokens=100, output_tokens=50, requests=3), model="gpt-4o", feature="f", user="u"
        )
        held = ledger.reserve(model="gpt-4o", input_tokens=100, max_output_tokens=100, user="u", feature="f")
        committed = ledger.commit(held, Usage(input_tokens=100, output_tokens=10, requests=2))
    assert recorded.applied
    assert committed.applied
    assert not recorded.spooled
    assert not committed.spooled
    assert sum("cost samples were not" in r.getMessage() for r in caplog.records) == 2
    totals = ledger.store.totals(ledger.day(), [("u/f/u", "tokens")], ledger._now_ms())
    assert totals == {("u/f/u", "tokens"): (260, 0)}  # each charged once, nothing held
    assert len(ledger.spool) == 0
