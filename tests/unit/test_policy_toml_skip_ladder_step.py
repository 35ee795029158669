"""A TOML policy skips a ladder step with ``false`` (TOML has no null): ``soft_refusal = false`` is
``Ladder(soft_refusal=None)``, which grants a call that fills a budget exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenbudget_core import Ledger
from tokenbudget_core.budgets import BudgetPolicy, Ladder, load_policy
from tokenbudget_core.errors import InvalidInputError


def test_false_skips_a_ladder_step_in_a_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "budgets.toml"
    path.write_text(
        "user_daily_tokens = 100\n[ladder]\nsoft_refusal = false\nsmaller_context = false\n", encoding="utf-8"
    )
    policy = load_policy(path)
    assert policy.ladder == Ladder(soft_refusal=None, smaller_context=None)
    assert policy == BudgetPolicy(
        user_daily_tokens=100, ladder=Ladder(soft_refusal=None, smaller_context=None)
    )


def test_a_toml_policy_without_soft_refusal_grants_a_call_that_fills_the_budget(tmp_path: Path) -> None:
    policy = load_policy({"user_daily_tokens": 100, "ladder": {"cache_only": False, "soft_refusal": False}})
    ledger = Ledger("memory://", policy=policy, alerts=[], spool_path=tmp_path / "spool")
    reservation = ledger.reserve(model="gpt-4o", input_tokens=100, max_output_tokens=0, user="u")
    # granted, as with Ladder(cache_only=None, soft_refusal=None) in code
    assert reservation.step == "smaller_context"


@pytest.mark.parametrize("value", [True, "none", 0, []])
def test_another_spelling_names_the_step_and_says_false_skips_it(value: object) -> None:
    with pytest.raises(InvalidInputError) as info:
        load_policy({"ladder": {"soft_refusal": value}})
    assert info.value.field == "ladder.soft_refusal"
    assert "false" in (info.value.fix or "")
