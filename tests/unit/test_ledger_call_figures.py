"""The ledger refuses figures that would make report rows contradict themselves (review s20,
finding 4): usage with tokens (or a cache hit) that covers no call, and a saving with no cache hit.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report
from tokenbudget_core.stores.base import LedgerStore
from tokenbudget_core.stores.memory import MemoryStore
from tokenbudget_core.stores.sqlite import SQLiteStore
from tokenbudget_core.usage import Usage

NO_CALL = Usage(input_tokens=400_000, output_tokens=0, requests=0)
ONE_CALL = Usage(input_tokens=10, output_tokens=1)


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], LedgerStore]:
    if request.param == "memory":
        return MemoryStore
    return lambda: SQLiteStore(f"sqlite:///{tmp_path}/ledger.db")


def _requests(ledger: Ledger) -> int:
    return build_report(ledger, last_days=1).totals.requests


def test_usage_with_tokens_but_no_call_is_refused(make_store: Callable[[], LedgerStore]) -> None:
    ledger = Ledger(make_store())
    with pytest.raises(InvalidInputError) as e:
        ledger.record(NO_CALL, model="gpt-4o", feature="f", user="payer")
    assert e.value.field == "usage.requests"
    assert "number of calls" in str(e.value)
    r = ledger.reserve(model="gpt-4o", input_tokens=1000, max_output_tokens=100, user="payer")
    with pytest.raises(InvalidInputError) as e:
        ledger.commit(r, NO_CALL)
    assert e.value.field == "usage.requests"
    with pytest.raises(InvalidInputError) as e:
        ledger.record(Usage(requests=0), model="gpt-4o", cache_hit=True)
    assert e.value.field == "usage.requests"
    assert _requests(ledger) == 0  # nothing half-recorded
    ledger.commit(r, ONE_CALL)  # the reservation is still there to charge properly
    assert _requests(ledger) == 1


def test_a_saving_without_a_cache_hit_is_refused(make_store: Callable[[], LedgerStore]) -> None:
    ledger = Ledger(make_store())
    with pytest.raises(InvalidInputError) as e:
        ledger.record(ONE_CALL, model="gpt-4o", feature="g", saved_usd=Decimal(5))
    assert e.value.field == "saved_usd"
    assert "cache_hit=True" in str(e.value)
    r = ledger.reserve(model="gpt-4o", input_tokens=10, max_output_tokens=1)
    with pytest.raises(InvalidInputError) as e:
        ledger.commit(r, ONE_CALL, saved_usd=Decimal(5))
    assert e.value.field == "saved_usd"
    ledger.commit(r, Usage(requests=1), cache_hit=True, saved_usd=Decimal(5))  # a hit may save
    row = build_report(ledger, last_days=1).totals
    assert (row.requests, row.cache_hits, row.saved_usd) == (1, 1, Decimal(5))


def test_settle_charges_the_estimate_of_a_report_that_covers_no_call() -> None:
    """A provider report the ledger refuses (tokens, no call) is never lost: the call, already
    sent, is charged its estimate, one call of its payer."""
    ledger = Ledger(MemoryStore())
    r = ledger.reserve(model="gpt-4o", input_tokens=1000, max_output_tokens=100, user="payer")
    charge = ledger.settle(r, NO_CALL, reply_text="an answer")
    assert charge is not None
    assert charge.usage.estimated
    totals = build_report(ledger, last_days=1).totals
    assert (totals.requests, totals.active_users) == (1, 1)
