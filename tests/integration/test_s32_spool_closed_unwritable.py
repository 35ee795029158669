"""A fail-closed ledger spools a commit the store cannot take too (a call reserved before an
outage and committed during it has gone out): a spool it cannot write is told when the ledger is
built (a WARNING naming the spool path and the fix), not first when that usage is lost; a
fail-open ledger still refuses it (InvalidInputError naming ``spool_path``). Against a real Redis.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger

pytestmark = pytest.mark.integration


def test_an_unwritable_spool_is_told_when_a_fail_closed_ledger_is_built(
    clean_redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    spool = blocker / "sub" / "spool.jsonl"
    with caplog.at_level(logging.WARNING, logger="tokenbudget.ledger"):
        ledger = Ledger(
            clean_redis_url, policy=BudgetPolicy(user_daily_tokens=1000), spool_path=spool, alerts=[]
        )
    told = [r.getMessage() for r in caplog.records if str(spool) in r.getMessage()]
    assert len(told) == 1
    assert "cannot be written" in told[0]
    assert "spool_path=" in told[0]
    assert "not recorded" in told[0]
    ledger.close()
    with pytest.raises(InvalidInputError, match="spool_path") as e:
        Ledger(clean_redis_url, on_unavailable="open", spool_path=spool, alerts=[])
    assert str(spool) in str(e.value)


def test_a_writable_spool_is_not_warned_about(
    clean_redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="tokenbudget.ledger"):
        Ledger(clean_redis_url, spool_path=tmp_path / "s.jsonl", alerts=[]).close()
    assert not [r for r in caplog.records if "spool" in r.getMessage()]
