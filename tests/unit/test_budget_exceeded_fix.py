"""A refusal's fix fits the limit that refused: a per-call limit wants a smaller call and a run
cap a new run (waiting for the next day changes neither); a daily budget the next day or a
higher limit."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget, RunBudget
from tokenbudget_core.errors import BudgetExceededError
from tokenbudget_core.ledger import Ledger

pytestmark = pytest.mark.usefixtures("isolated")

PER_CALL = BudgetPolicy(
    user_daily_tokens=10_000,
    default_feature=FeatureBudget(max_input_tokens_per_call=1_000, max_output_tokens_per_call=100),
)


@pytest.mark.parametrize(
    ("call", "budget", "fix"),
    [
        (
            {"input_tokens": 5_000, "max_output_tokens": 10},
            "max_input_tokens_per_call",
            "Send fewer input tokens",
        ),
        (
            {"input_tokens": 10, "max_output_tokens": 500},
            "max_output_tokens_per_call",
            "Ask for fewer output tokens",
        ),
        ({"input_tokens": 20_000, "max_output_tokens": 10, "user": "u"}, "user_daily_tokens", "the next day"),
    ],
)
def test_a_refusal_names_the_fix_of_its_limit(call: dict[str, int], budget: str, fix: str) -> None:
    ledger = Ledger(
        "memory://",
        policy=PER_CALL if budget != "user_daily_tokens" else BudgetPolicy(user_daily_tokens=10_000),
    )
    with pytest.raises(BudgetExceededError) as e:
        ledger.reserve(model="gpt-4o", **call)  # type: ignore[arg-type]
    assert e.value.budget.startswith(budget)
    assert fix in e.value.fix
    assert str(e.value).endswith(e.value.fix)
    assert ("next day" in str(e.value)) == (budget == "user_daily_tokens")


@pytest.mark.parametrize("cap", ["tokens", "usd"])
def test_a_run_cap_refusal_says_start_a_new_run(cap: str) -> None:
    ledger = Ledger("memory://")
    r = ledger.reserve(model="gpt-4o", input_tokens=500, max_output_tokens=100)
    run = RunBudget(max_tokens=1_000) if cap == "tokens" else RunBudget(max_usd=Decimal("0.001"))
    with pytest.raises(BudgetExceededError) as e:
        run.check(r, tokens_used=900, usd_used=Decimal(0))
    assert e.value.budget == f"max_run_{cap}"
    assert "start a new run" in str(e.value)
    assert "next day" not in str(e.value)
