"""Allocation.fill and Allocation.rebalance name the bad argument instead of crashing."""

from __future__ import annotations

from typing import Any

import pytest

from tokenbudget_core.allocation import allocate_budget
from tokenbudget_core.errors import InvalidInputError


@pytest.mark.parametrize("demand", [None, [("context", 5)], "context", 5])
def test_fill_needs_a_dict_of_demands(demand: Any) -> None:
    with pytest.raises(InvalidInputError) as info:
        allocate_budget(100).fill(demand)
    assert info.value.field == "demand"
    assert "e.g. demand=" in str(info.value)


@pytest.mark.parametrize("to", [5, 2.5, object()])
def test_rebalance_to_must_be_a_part_or_parts(to: Any) -> None:
    a = allocate_budget(100, shares={"context": 0.5})
    with pytest.raises(InvalidInputError) as info:
        a.rebalance({"context": 10}, to=to)
    assert info.value.field == "to"
    assert "to='history'" in str(info.value)


def test_rebalance_to_with_unhashable_entries_names_the_part() -> None:
    a = allocate_budget(100, shares={"context": 0.5})
    with pytest.raises(InvalidInputError) as info:
        a.rebalance({"context": 10}, to=[["history"]])
    assert info.value.field == "to"
    # Valid forms keep working: a name, a list, a generator.
    assert a.rebalance({"context": 10}, to="history").history == 90
    assert a.rebalance({"context": 10}, to=["history", "user"]).context == 10
    assert a.rebalance({"context": 10}, to=(p for p in ["history"])).history == 90
