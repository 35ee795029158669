"""An empty ``user`` or ``feature`` ("", say a missing header) is refused with an
``InvalidInputError`` naming the field, on every ledger entry point that takes the ids: it was
charged to the anonymous payer's budgets (``None``'s), pooled with every call without one.
Against a real Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tokenbudget_core import Usage
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger

pytestmark = pytest.mark.integration

CALL = {"model": "gpt-4o", "input_tokens": 10, "max_output_tokens": 10}

ENTRY_POINTS: dict[str, Callable[[Ledger, dict[str, str]], Any]] = {
    "reserve": lambda led, ids: led.reserve(**CALL, **ids),
    "areserve": lambda led, ids: asyncio.run(led.areserve(**CALL, **ids)),
    "check": lambda led, ids: led.check(**CALL, **ids),
    "record": lambda led, ids: led.record(Usage(input_tokens=10, output_tokens=1), model="gpt-4o", **ids),
    "state": lambda led, ids: led.state(**ids),
    "astate": lambda led, ids: asyncio.run(led.astate(**ids)),
    "context_tokens": lambda led, ids: led.context_tokens(1000, **ids),
    "reserve_many": lambda led, ids: _raise_first(led.reserve_many([{**CALL, **ids}])),
}


def _raise_first(results: list[Any]) -> None:
    if isinstance(results[0], Exception):
        raise results[0]


@pytest.mark.parametrize("field", ["user", "feature"])
@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_an_empty_id_is_refused_naming_its_field(
    clean_redis_url: str, tmp_path: Path, entry: str, field: str
) -> None:
    policy = BudgetPolicy(user_daily_tokens=1000, daily_usd="5.00")
    ledger = Ledger(clean_redis_url, policy=policy, spool_path=tmp_path / "s.jsonl", alerts=[])
    with pytest.raises(InvalidInputError) as e:
        ENTRY_POINTS[entry](ledger, {field: ""})
    assert e.value.field == field
    assert "must not be empty" in str(e.value)
    assert "None" in str(e.value)
    # nothing was charged to the anonymous payer
    assert not any(ledger.state().used.values())
    ledger.reserve(**CALL, **{field: "someone"})  # a real id still goes through
    ledger.close()
