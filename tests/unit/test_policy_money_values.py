"""Money in a budget policy is a scalar amount: a TOML array, a table or a boolean is refused with
the key named, never read as some other amount (``Decimal`` reads a sequence as a sign, digits
and an exponent: ``[0, [5], 3]`` would be $5000)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from cli_support import assert_one_line_error, run
from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget, RunBudget, load_policy
from tokenbudget_core.cli import EXIT_BAD_INPUT
from tokenbudget_core.errors import InvalidInputError

NOT_MONEY = [
    ("[0, [5], 3]", "an array"),
    ("[0, [5], 0]", "an array"),
    ("[]", "an array"),
    ("{ amount = 5 }", "a table"),
    ("true", "a boolean"),
    ("0.5", "a float"),
]


@pytest.mark.parametrize(("toml", "kind"), NOT_MONEY)
@pytest.mark.parametrize(
    ("where", "template"),
    [
        ("daily_usd", "daily_usd = {}\n"),
        ("user_daily_usd", "user_daily_usd = {}\n"),
        ("features.support.user_daily_usd", "[features.support]\nuser_daily_usd = {}\n"),
        ("features.support.feature_daily_usd", "[features.support]\nfeature_daily_usd = {}\n"),
        ("default_feature.feature_daily_usd", "[default_feature]\nfeature_daily_usd = {}\n"),
    ],
)
def test_toml_money_that_is_not_an_amount_is_refused(
    tmp_path: Path, where: str, template: str, toml: str, kind: str
) -> None:
    path = tmp_path / "budgets.toml"
    path.write_text(template.format(toml), encoding="utf-8")
    with pytest.raises(InvalidInputError) as caught:
        load_policy(path)
    assert caught.value.field == where
    assert kind in str(caught.value)


@pytest.mark.parametrize("value", [(0, (5,), 3), [0, [5], 3], (0, (5,), 0), {"usd": 5}])
def test_code_money_that_is_not_an_amount_is_refused(value: object) -> None:
    for build, field in (
        (lambda: BudgetPolicy(daily_usd=value), "daily_usd"),  # type: ignore[arg-type]
        (lambda: FeatureBudget(user_daily_usd=value), "user_daily_usd"),  # type: ignore[arg-type]
        (lambda: RunBudget(max_usd=value), "max_usd"),  # type: ignore[arg-type]
    ):
        with pytest.raises(InvalidInputError) as caught:
            build()
        assert caught.value.field == field


@pytest.mark.parametrize("amount", [Decimal("5.25"), 5, "5.25"])
def test_amounts_are_still_accepted(amount: object) -> None:
    assert BudgetPolicy(daily_usd=amount).daily_usd == Decimal(amount)  # type: ignore[arg-type]


@pytest.mark.usefixtures("isolated")
def test_budgets_command_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "budgets.toml"
    path.write_text("daily_usd = [0, [5], 3]\n", encoding="utf-8")
    store = tmp_path / "never-opened.db"
    result = run("budgets", "--store", f"sqlite:///{store}", "--policy", str(path))
    assert_one_line_error(result, EXIT_BAD_INPUT, "daily_usd", "an array")


@pytest.mark.parametrize("amount", ["0.0000000001", "0.0000000005", Decimal("1E-12")])
def test_a_limit_the_ledger_would_keep_as_zero_is_refused(amount: str | Decimal) -> None:
    """A positive limit under the ledger's unit (nano-USD) would round to 0 and refuse every
    call: refused when the policy is made, with the fix."""
    with pytest.raises(InvalidInputError, match="half a nano-USD") as caught:
        FeatureBudget(user_daily_usd=amount)
    assert caught.value.field == "user_daily_usd"


@pytest.mark.parametrize("amount", ["0", "0.000000001", "0.0000000006"])
def test_zero_and_amounts_of_a_nano_usd_or_more_are_limits(amount: str) -> None:
    assert BudgetPolicy(daily_usd=amount).daily_usd == Decimal(amount)


def test_an_amount_beyond_what_a_ledger_stores_is_refused_not_overflowed() -> None:
    """``Decimal("1e999999999")`` is a number; arithmetic on it overflows Decimal's context:
    refused by name, never a bare ``decimal.Overflow``."""
    from tokenbudget_core.ledger import Ledger

    huge = "1e999999999"
    with pytest.raises(InvalidInputError, match="more than a ledger stores") as policy:
        BudgetPolicy(daily_usd=huge)
    assert policy.value.field == "daily_usd"
    with pytest.raises(InvalidInputError, match="more than a ledger stores"):
        RunBudget(max_usd=huge)
    reservation = Ledger("memory://").reserve(model="gpt-4o-mini", input_tokens=10, max_output_tokens=10)
    with pytest.raises(InvalidInputError, match="not an amount a run could have spent") as check:
        RunBudget(max_usd="1").check(reservation, tokens_used=0, usd_used=huge)
    assert check.value.field == "usd_used"


def test_a_limit_the_ledger_rounds_to_zero_is_refused_however_many_digits_it_has() -> None:
    with pytest.raises(InvalidInputError, match="half a nano-USD"):
        BudgetPolicy(daily_usd="0.50000000000000000000000000001E-9")  # 29 digits: 0 nano-USD as rounded


def test_usd_used_past_a_limit_is_a_refusal_and_past_any_spend_an_error() -> None:
    from tokenbudget_core.errors import BudgetExceededError
    from tokenbudget_core.ledger import Ledger

    reservation = Ledger("memory://").reserve(model="gpt-4o-mini", input_tokens=10, max_output_tokens=10)
    with pytest.raises(BudgetExceededError, match="max_run_usd"):  # $10 million spent: over a $1 budget
        RunBudget(max_usd="1").check(reservation, tokens_used=0, usd_used="10000000")
    with pytest.raises(InvalidInputError, match="not None"):
        RunBudget(max_usd="1").check(reservation, tokens_used=0, usd_used=None)  # type: ignore[arg-type]
