"""A policy built in code with a misspelt or positional setting fails like the TOML path does:
an ``InvalidInputError`` (a ``TokenBudgetError``) naming the setting, a close match and the known
settings, never a bare ``TypeError``. Valid construction, ``dataclasses.replace`` and pickling are
unchanged."""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable
from decimal import Decimal

import pytest

from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget, Ladder, RunBudget
from tokenbudget_core.errors import InvalidInputError, TokenBudgetError


@pytest.mark.parametrize(
    ("build", "name", "close"),
    [
        (lambda: BudgetPolicy(dayly_usd="5"), "dayly_usd", "daily_usd"),  # type: ignore[call-arg]
        (lambda: FeatureBudget(user_daly_usd="1"), "user_daly_usd", "user_daily_usd"),  # type: ignore[call-arg]
        (lambda: Ladder(cheaper=0.5), "cheaper", "cheaper_tier"),  # type: ignore[call-arg]
        (lambda: RunBudget(max_token=10), "max_token", "max_tokens"),  # type: ignore[call-arg]
    ],
)
def test_an_unknown_setting_is_named_with_a_close_match(
    build: Callable[[], object], name: str, close: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        build()
    assert isinstance(caught.value, TokenBudgetError)
    assert caught.value.field == name
    assert caught.value.fix is not None
    assert repr(close) in caught.value.fix


@pytest.mark.parametrize("cls", [BudgetPolicy, FeatureBudget, Ladder, RunBudget])
def test_a_positional_setting_is_refused(cls: type) -> None:
    with pytest.raises(InvalidInputError) as caught:
        cls("5")
    assert caught.value.field == cls.__name__
    first = dataclasses.fields(cls)[0].name
    assert caught.value.fix is not None
    assert first in caught.value.fix


def test_valid_policies_are_unchanged() -> None:
    policy = BudgetPolicy(
        daily_usd="5",
        features={"support": FeatureBudget(user_daily_usd="1", user_daily_tokens=10)},
        ladder=Ladder(cheaper_tier=0.5),
    )
    assert policy.daily_usd == Decimal(5)
    assert dataclasses.replace(policy, daily_usd="6").daily_usd == Decimal(6)
    assert pickle.loads(pickle.dumps(policy)) == policy
    assert RunBudget(max_tokens=10, max_usd="1") == RunBudget(max_tokens=10, max_usd=Decimal(1))
