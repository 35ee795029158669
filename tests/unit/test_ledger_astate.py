"""Ledger.astate, the async twin of state(): the same answer, the attribution carried."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tokenbudget_core.attribution import attribute
from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget
from tokenbudget_core.ledger import BudgetState, Ledger
from tokenbudget_core.usage import Usage


def test_astate_answers_as_state_for_the_attributed_payer(tmp_path: Path) -> None:
    for url in ("memory://", f"sqlite:///{tmp_path / 'l.db'}"):  # inline, and in a worker thread
        ledger = Ledger(url, policy=BudgetPolicy(features={"chat": FeatureBudget(user_daily_tokens=100)}))
        ledger.record(
            Usage(input_tokens=90, output_tokens=0), model="gpt-4o-mini", feature="chat", user="u-1"
        )

        async def read() -> tuple[BudgetState, BudgetState, BudgetState]:
            with attribute(feature="chat", user="u-1"):
                attributed = await ledger.astate()
            return (
                attributed,
                await ledger.astate(feature="chat", user="u-1"),
                await ledger.astate(feature="chat", user="u-2"),
            )

        attributed, named, other = asyncio.run(read())
        expected = ledger.state(feature="chat", user="u-1")
        assert attributed == expected
        assert named == expected
        assert expected.shares == {"user_daily_tokens": 0.9}
        assert other == ledger.state(feature="chat", user="u-2")
        assert other.shares == {"user_daily_tokens": 0.0}
        ledger.close()
