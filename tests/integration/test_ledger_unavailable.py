"""The ledger when its Redis store goes away mid-run: fail closed, or fail open with a spool."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from redis_server import RedisServer
from tokenbudget_core import Usage, cost_of
from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget
from tokenbudget_core.errors import BudgetUnavailableError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.money import nanos_to_usd

pytestmark = pytest.mark.integration

POLICY = BudgetPolicy(daily_usd="100", features={"chat": FeatureBudget(user_daily_usd="10")})


def usage(i: int) -> Usage:
    return Usage(input_tokens=100 + i, output_tokens=10 + i % 7)


def total_spent(ledger: Ledger) -> Decimal:
    spent, reserved = ledger.store.totals(ledger.day(), [("g", "nanos")], 0)[("g", "nanos")]
    assert reserved == 0
    return nanos_to_usd(spent)


def test_fail_closed_refuses_cleanly_while_redis_is_down(server: RedisServer, tmp_path: Path) -> None:
    ledger = Ledger(server.url, policy=POLICY, spool_path=tmp_path / "spool.jsonl", alerts=[])
    try:
        r = ledger.reserve(
            model="gpt-4o-mini", input_tokens=100, max_output_tokens=20, feature="chat", user="a"
        )
        server.halt()
        with pytest.raises(BudgetUnavailableError) as info:
            ledger.reserve(
                model="gpt-4o-mini", input_tokens=100, max_output_tokens=20, feature="chat", user="a"
            )
        assert isinstance(info.value, ConnectionError)
        # The call that was already in flight finishes while the store is down: its usage is spooled.
        charge = ledger.commit(r, usage(0))
        assert charge.spooled
        assert not charge.applied
        server.resume()
        assert ledger.replay_spool() == 1
        assert total_spent(ledger) == cost_of(usage(0), "gpt-4o-mini")
    finally:
        ledger.close()


def test_fail_open_spools_and_replays_nothing_lost_or_doubled(server: RedisServer, tmp_path: Path) -> None:
    spool = tmp_path / "spool.jsonl"
    ledger = Ledger(server.url, policy=POLICY, on_unavailable="open", spool_path=spool, alerts=[])
    expected = Decimal(0)
    try:
        for i in range(60):
            if i == 20:
                server.halt(kill=True)
            if i == 40:
                server.resume()
            r = ledger.reserve(
                model="gpt-4o-mini", input_tokens=100, max_output_tokens=20, feature="chat", user="a"
            )
            assert r.unchecked == (20 <= i < 40)
            charge = ledger.commit(r, usage(i))
            expected += cost_of(usage(i), "gpt-4o-mini")
            if 20 <= i < 40:
                assert charge.spooled
        # The first operation after the restart replayed the spool; replaying again changes nothing.
        assert ledger.spool.pending() is False
        assert total_spent(ledger) == expected
        lines = [
            f'{{"day":"{ledger.day()}","request_id":"x","charges":[],"rollup_key":"//","rollup":{{}},"now_ms":0}}'
        ]
        spool.write_text("\n".join(lines) + "\n")
        ledger.replay_spool()
        ledger.replay_spool()
        assert total_spent(ledger) == expected
        rows = {row.rollup_key: row.values for row in ledger.store.rollup([ledger.day()])}
        assert rows["chat/a/gpt-4o-mini"]["requests"] == 60
    finally:
        ledger.close()


def test_a_spool_that_cannot_be_written_is_a_clear_error_not_a_raw_oserror(
    server: RedisServer, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    ledger = Ledger(server.url, policy=POLICY, spool_path=blocker / "sub" / "spool.jsonl", alerts=[])
    try:
        server.halt(kill=True)
        with pytest.raises(BudgetUnavailableError) as e:
            ledger.record(usage(1), model="gpt-4o-mini", feature="chat", user="a", request_id="lost")
        assert "could not be written to the spool" in str(e.value)
        assert "'lost'" in str(e.value)
        assert "record the usage again" in str(e.value)
    finally:
        server.resume()
        ledger.close()
