"""A ledger's store is fixed for its life, and its time zone is one of IANA names (re-review s24
F4-F6). Before: ``ledger.store = other`` was accepted, after which ``check()`` read the new store
while a memory ledger's reserve and record kept the old one (check said "normal" for a call
reserve refused), the alert memo kept the old store's marks (the new store's threshold alerts
were never sent) and ``books`` still named the old store; and ``ledger.tz = ZoneInfo.from_file(...)``
was accepted, after which every ``check()`` raised about a ``timezone`` the caller never passed."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.stores.memory import MemoryStore


def test_a_ledgers_store_cannot_be_reassigned(tmp_path: Path) -> None:
    for url in ("memory://", f"sqlite:///{tmp_path / 'l.db'}"):
        ledger = Ledger(url, policy=BudgetPolicy(daily_usd="1"))
        before = ledger.store
        with pytest.raises(InvalidInputError) as info:
            ledger.store = MemoryStore()  # type: ignore[misc]
        assert info.value.field == "store"
        assert "new Ledger" in str(info.value)
        assert ledger.store is before


def test_a_time_zone_without_an_iana_name_is_refused_on_assignment() -> None:
    ledger = Ledger("memory://")
    utc = Path("/usr/share/zoneinfo/UTC")
    if not utc.exists():
        pytest.skip("no system tzdata file to load a key-less zone from")
    with utc.open("rb") as f:
        keyless = ZoneInfo.from_file(f)
    with pytest.raises(InvalidInputError) as info:
        ledger.tz = keyless
    assert info.value.field == "tz"
    ledger.tz = ZoneInfo("Europe/Berlin")  # an IANA zone is still taken, and check follows it
    assert ledger.check(model="gpt-4o-mini", input_tokens=5, max_output_tokens=5).step == "normal"
