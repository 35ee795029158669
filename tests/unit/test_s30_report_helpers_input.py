"""The public helpers behind ``tokenbudget budgets``, ``GET /budgets`` and the reports validate
their input by name (a feature id passed where a list is expected is not read as one-letter
features), and ``budget_rows`` answers for the feature and user it is asked about even inside an
``attribute()`` block (whose ids win over a ledger call's own arguments)."""

from __future__ import annotations

from typing import Any

import pytest

from tokenbudget_core import BudgetPolicy, FeatureBudget, Ledger, Usage
from tokenbudget_core.attribution import attribute, outer_first
from tokenbudget_core.budget_status import budget_rows, features_of
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.percentiles import nearest_ranks

pytestmark = pytest.mark.usefixtures("isolated")


def _ledger() -> Ledger:
    policy = BudgetPolicy(
        features={
            "chat": FeatureBudget(feature_daily_usd="1", user_daily_usd="1"),
            "search": FeatureBudget(feature_daily_usd="1", user_daily_usd="1"),
        }
    )
    ledger = Ledger("memory://", policy=policy)
    ledger.record(
        Usage(input_tokens=100_000, output_tokens=10_000), model="gpt-4o", feature="chat", user="alice"
    )
    return ledger


def _figures(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(r["feature"], r["user"], r["budget"], str(r["used"])) for r in rows]


def test_budget_rows_inside_a_block_are_those_asked_for() -> None:
    ledger = _ledger()
    outside = budget_rows(ledger, ["chat", "search"], "bob")
    with attribute(feature="chat", user="alice"):
        inside = budget_rows(ledger, ["chat", "search"], "bob")
    assert _figures(inside[0]) == _figures(outside[0])
    assert ("search", "bob", "user_daily_usd", "0") in _figures(inside[0])


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda ledger: budget_rows(ledger, "chat", None), "features"),
        (lambda ledger: budget_rows(ledger, ["chat", 5], None), "features[1]"),
        (lambda ledger: budget_rows(ledger, ["chat"], 7), "user"),
        (lambda ledger: budget_rows(None, [None], None), "ledger"),
        (lambda ledger: features_of(None), "policy"),
        (lambda ledger: outer_first(None, ("u",)), "levels[0]"),
        (lambda ledger: outer_first(("f", None), 5), "levels[1]"),
        (lambda ledger: nearest_ranks(None, 5, [50]), "read"),
        (lambda ledger: nearest_ranks(lambda: [[1]], 1, None), "percents"),
    ],
)
def test_bad_arguments_are_named(call: Any, field: str) -> None:
    with pytest.raises(InvalidInputError) as e:
        call(_ledger())
    assert e.value.field == field
