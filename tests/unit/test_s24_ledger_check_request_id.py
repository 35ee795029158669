"""``Ledger.check`` takes the arguments ``reserve`` takes (README: "takes the same arguments and
answers as reserve would"), ``request_id`` included, validated alike; and a misspelt keyword of
``Ledger``, ``check``, ``record`` or ``state`` is an ``InvalidInputError`` naming it and the
closest known one, not a bare ``TypeError``."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.errors import BudgetExceededError, InvalidInputError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")

ARGS: dict[str, Any] = {
    "model": "gpt-4o", "input_tokens": 100, "max_output_tokens": 100, "feature": "support",
    "user": "u-42", "request_id": "req-1",
}  # fmt: skip


def test_check_takes_reserves_arguments_request_id_included() -> None:
    ledger = Ledger("memory://", policy=BudgetPolicy(daily_usd=Decimal(1)))
    checked = ledger.check(**ARGS)
    reserved = ledger.reserve(**ARGS)
    assert (checked.step, checked.worst_case_usd) == (reserved.step, reserved.reserved_usd)
    assert ledger.state().used == {"daily_usd": reserved.reserved_usd}  # the check held nothing


async def test_acheck_takes_request_id_too() -> None:
    ledger = Ledger("memory://")
    assert (await ledger.acheck(**ARGS)).step == "normal"


def test_check_refuses_as_reserve_does_with_a_request_id() -> None:
    ledger = Ledger("memory://", policy=BudgetPolicy(daily_usd=Decimal("0.0001")))
    with pytest.raises(BudgetExceededError):
        ledger.check(**ARGS)


@pytest.mark.parametrize("bad", ["", 42, "\udcff"])
def test_checks_request_id_is_validated_as_reserves(bad: object) -> None:
    ledger = Ledger("memory://")
    with pytest.raises(InvalidInputError) as checked:
        ledger.check(**(ARGS | {"request_id": bad}))
    with pytest.raises(InvalidInputError) as reserved:
        ledger.reserve(**(ARGS | {"request_id": bad}))
    assert checked.value.field == reserved.value.field == "request_id"


@pytest.mark.parametrize(
    ("call", "typo", "meant"),
    [
        (lambda led, **kw: Ledger("memory://", **kw), "polcy", "policy"),
        (
            lambda led, **kw: led.check(model="gpt-4o", input_tokens=1, **kw),
            "max_tokens",
            "max_output_tokens",
        ),
        (lambda led, **kw: led.record(Usage(input_tokens=1), model="gpt-4o", **kw), "usr", "user"),
        (lambda led, **kw: led.state(**kw), "feture", "feature"),
    ],
)
def test_a_misspelt_keyword_is_named_with_the_closest_one(
    call: Callable[..., object], typo: str, meant: str
) -> None:
    ledger = Ledger("memory://")
    with pytest.raises(InvalidInputError) as raised:
        call(ledger, **{typo: "x"})
    assert raised.value.field == typo
    assert f"did you mean {meant!r}" in str(raised.value)
    assert ledger.state().used == {}  # nothing recorded


async def test_the_async_twins_name_a_misspelt_keyword_too() -> None:
    ledger = Ledger("memory://")
    with pytest.raises(InvalidInputError, match="did you mean 'user'"):
        await ledger.arecord(Usage(input_tokens=1), model="gpt-4o", usr="u")
    with pytest.raises(InvalidInputError, match="did you mean 'user'"):
        await ledger.astate(usr="u")
