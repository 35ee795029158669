"""A Redis script that meets a key of the wrong type writes nothing.

Redis does not roll a script back: a ``WRONGTYPE`` half-way keeps the increments made before
it. A commit that found the day's rollup (written by another application) not a hash had
already added to the spent counters; spooled and replayed, it added them again (twice the
call's cost in the budget, nothing in reports). A reserve that found the day's ``held`` hash of
another type had already added to the reserved counter with no lease, held for the rest of the
day. Every script now checks its keys' types before its first write.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.errors import StoreRefusedError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")

USAGE = Usage(input_tokens=1_000, output_tokens=100)


def _ledger(url: str, tmp_path: Path, **options: Any) -> Ledger:
    return Ledger(
        f"{url}?namespace=wt",
        policy=BudgetPolicy(daily_usd=Decimal("10")),
        spool_path=tmp_path / "spool.jsonl",
        **options,
    )


def _key(ledger: Ledger, name: str) -> str:
    return f"{{wt:{ledger.day()}}}:{name}"


@pytest.mark.parametrize("name", ["bal", "req", "held", "leases", "rollup", "marks"])
def test_a_commit_meeting_a_foreign_key_charges_nothing_and_its_replay_charges_once(
    clean_redis_url: str, redis_client: Any, tmp_path: Path, name: str
) -> None:
    ledger = _ledger(clean_redis_url, tmp_path, on_unavailable="open")
    redis_client.set(_key(ledger, name), "another application's value")
    charge = ledger.record(USAGE, model="gpt-4o", request_id="call-1", conversation="c-1")
    assert charge.spooled  # refused by the store: kept in the spool
    redis_client.delete(_key(ledger, name))
    assert ledger.state().used["daily_usd"] == 0  # nothing was written by the refused script
    ledger.replay_spool()  # the foreign key is gone: the spooled commit goes in
    assert ledger.state().used["daily_usd"] == charge.cost_usd  # once, not twice
    rows = ledger.store.rollup([ledger.day()])
    assert sum(row.values.get("requests", 0) for row in rows) == 1
    ledger.close()


@pytest.mark.parametrize("name", ["bal", "req", "held", "leases"])
def test_a_reserve_meeting_a_foreign_key_holds_nothing(
    clean_redis_url: str, redis_client: Any, tmp_path: Path, name: str
) -> None:
    ledger = _ledger(clean_redis_url, tmp_path)
    redis_client.set(_key(ledger, name), "another application's value")
    for _ in range(3):
        with pytest.raises(StoreRefusedError):
            ledger.reserve(model="gpt-4o", input_tokens=1_000, max_output_tokens=2_000)
    redis_client.delete(_key(ledger, name))
    assert ledger.state().used["daily_usd"] == 0  # before: 3 worst cases held, with no lease
    ledger.close()


def test_a_release_meeting_a_foreign_key_gives_back_nothing_twice(
    clean_redis_url: str, redis_client: Any, tmp_path: Path
) -> None:
    ledger = _ledger(clean_redis_url, tmp_path)
    r = ledger.reserve(model="gpt-4o", input_tokens=1_000, max_output_tokens=2_000)
    redis_client.rename(_key(ledger, "leases"), "wt-leases-aside")
    redis_client.set(_key(ledger, "leases"), "another application's value")
    with pytest.raises(StoreRefusedError):
        ledger.release(r)
    redis_client.delete(_key(ledger, "leases"))
    redis_client.rename("wt-leases-aside", _key(ledger, "leases"))
    assert ledger.state().used["daily_usd"] == r.reserved_usd  # still held: the release changed nothing
    ledger.release(r)
    assert ledger.state().used["daily_usd"] == 0
    ledger.close()
