"""Every policy error names the field and the fix (a quoted token limit, a decreasing ladder, a
plain dict where a FeatureBudget or Ladder goes, an empty feature name), and ``Ladder.step``
refuses what is not a share (NaN, a bool, None, a string) with an InvalidInputError."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget, Ladder, RunBudget, load_policy
from tokenbudget_core.errors import InvalidInputError

BAD: Any = {"user_daily_usd": "1"}  # a plain dict of limits, the natural mistake


@pytest.mark.parametrize(
    ("build", "field", "in_fix"),
    [
        (lambda: load_policy({"user_daily_tokens": "100"}), "user_daily_tokens", "unquoted"),
        (
            lambda: load_policy({"features": {"s": {"user_daily_tokens": "100"}}}),
            "features.s.user_daily_tokens",
            "unquoted",
        ),
        (lambda: BudgetPolicy(user_daily_tokens=-5), "user_daily_tokens", "100000"),
        (lambda: RunBudget(max_tokens=1.5), "max_tokens", "whole number"),
        (lambda: Ladder(cheaper_tier=0.9, smaller_context=0.5), "ladder.smaller_context", "at least 0.9"),
        (lambda: load_policy({"ladder": {"cache_only": 0.5}}), "ladder.cache_only", "at least 0.75"),
        (lambda: BudgetPolicy(features={"s": BAD}), "features['s']", "FeatureBudget(**limits)"),
        (lambda: BudgetPolicy(default_feature=BAD), "default_feature", "FeatureBudget(**limits)"),
        (lambda: BudgetPolicy(ladder={"cheaper_tier": 0.5}), "ladder", "Ladder(**steps)"),
        (lambda: BudgetPolicy(features={"": FeatureBudget()}), "features", "default_feature"),
    ],
)
def test_a_policy_error_names_the_field_and_the_fix(
    build: Callable[[], object], field: str, in_fix: str
) -> None:
    with pytest.raises(InvalidInputError) as info:
        build()
    assert info.value.field == field
    assert in_fix in (info.value.fix or ""), str(info.value)


@pytest.mark.parametrize("share", [float("nan"), True, False, None, "0.5", -0.1, [0.5]])
def test_ladder_step_refuses_what_is_not_a_share(share: Any) -> None:
    with pytest.raises(InvalidInputError) as info:
        Ladder().step(share)
    assert info.value.field == "used_share"
    assert info.value.fix


@pytest.mark.parametrize(
    ("share", "step"),
    [
        (0, "normal"),
        (0.6, "cheaper_tier"),
        (0.97, "soft_refusal"),
        (1, "hard_refusal"),
        (float("inf"), "hard_refusal"),
    ],
)
def test_ladder_step_still_maps_a_share_to_its_step(share: float, step: str) -> None:
    assert Ladder().step(share) == step
