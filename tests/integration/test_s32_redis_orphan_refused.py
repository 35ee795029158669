"""An abandoned reservation's release that Redis refuses for good (another application's data
under one of the ledger's keys: ``WRONGTYPE``) is logged with its id and dropped: it never
raises into a later call whose own operation succeeded (its hold would leak, taken for one not
made), and it holds up neither the spool's replay nor later reservations. Against a real Redis.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from tokenbudget_core import Usage
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.ledger import Ledger

pytestmark = pytest.mark.integration


def test_a_refused_orphan_release_is_dropped_and_blocks_neither_reserves_nor_replay(
    clean_redis_url: str, redis_client: redis.Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    today = datetime.now(UTC).replace(hour=0, minute=5, second=0, microsecond=0)
    t0 = today.timestamp()  # 00:05: abandon() releases on yesterday too (within a lease)
    ledger = Ledger(
        clean_redis_url,
        policy=BudgetPolicy(user_daily_tokens=1_000_000),
        on_unavailable="open",
        spool_path=tmp_path / "s.jsonl",
        clock=lambda: t0,
        alerts=[],
    )

    def reserve() -> object:
        return ledger.reserve(model="gpt-4o", input_tokens=100, max_output_tokens=100, user="u", feature="f")

    held = [reserve() for _ in range(2)]
    redis_client.config_set("min-replicas-to-write", 1)  # writes refused for a moment: commits spool
    try:
        for reservation in held:
            assert ledger.commit(reservation, Usage(input_tokens=100, output_tokens=10)).spooled
    finally:
        redis_client.config_set("min-replicas-to-write", 0)
    assert len(ledger.spool) == 2
    yesterday = (today - timedelta(days=1)).strftime("%Y-%m-%d")
    assert ledger._day_of(t0 - 86_400) == yesterday
    redis_client.set("{tb:%s}:req" % yesterday, "another application's")  # noqa: UP031 - a key name
    ledger.abandon("run-42")  # released on yesterday (refused: WRONGTYPE) and today

    with caplog.at_level(logging.WARNING, logger="tokenbudget.ledger"):
        third = reserve()  # looks at the orphans and the spool first: neither raises here
    assert any("run-42" in r.getMessage() and "WRONGTYPE" in r.getMessage() for r in caplog.records)
    assert ledger.commit(third, Usage(input_tokens=100, output_tokens=10)).applied
    # the spool was replayed on that look; every call charged once, nothing left held
    assert len(ledger.spool) == 0
    assert not (tmp_path / "s.jsonl.bad").exists()
    day = ledger._day_of(t0)

    def spent_and_held() -> object:
        return ledger.store.totals(day, [("u/f/u", "tokens")], ledger._now_ms())[("u/f/u", "tokens")]

    assert ledger.store.totals(day, [("u/f/u", "tokens")], ledger._now_ms()) == {
        ("u/f/u", "tokens"): (330, 0)
    }
    for _ in range(3):  # the refused release is gone: later calls and looks never meet it again
        ledger._next_spool_check = 0.0
        ledger.catch_up()
        reservation = reserve()
        assert ledger.commit(reservation, Usage(input_tokens=1, output_tokens=1)).applied
    assert ledger.store.totals(day, [("u/f/u", "tokens")], ledger._now_ms()) == {
        ("u/f/u", "tokens"): (336, 0)
    }
