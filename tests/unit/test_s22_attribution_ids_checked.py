"""An ``Attribution`` (public: adapters that resolve a payer put one in force with ``in_force``)
checks its ids as ``attribute()`` does, so no bad id is ever in force: a ledger call under one
never fails with a bare TypeError / UnicodeEncodeError, and no reserve is granted whose commit
is refused (review s22 #5)."""

from __future__ import annotations

import pytest

from tokenbudget_core import InvalidInputError
from tokenbudget_core.attribution import Attribution, attribute, current_attribution, in_force
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.usage import Usage

BAD_IDS = [
    ("feature", 5),
    ("user", "x\udcff"),
    ("conversation", ["c"]),
    ("tenant", ""),
    ("feature", b"support"),
]


@pytest.mark.parametrize(("field", "value"), BAD_IDS)
def test_an_attribution_refuses_the_ids_attribute_refuses_with_the_same_named_error(
    field: str, value: object
) -> None:
    with pytest.raises(InvalidInputError) as by_block, attribute(**{field: value}):  # type: ignore[arg-type]
        pass
    with pytest.raises(InvalidInputError) as built:
        Attribution(**{field: value})  # type: ignore[arg-type]
    assert built.value.field == by_block.value.field == field
    assert str(built.value) == str(by_block.value)


def test_the_overhead_kind_is_checked_too() -> None:
    with pytest.raises(InvalidInputError) as e:
        Attribution(overhead=3)  # type: ignore[arg-type]
    assert e.value.field == "overhead"


def test_no_reserve_is_granted_under_a_conversation_its_commit_would_refuse() -> None:
    ledger = Ledger("memory://", policy=BudgetPolicy(daily_usd="1"))

    def reserve_under_a_list_conversation() -> None:
        payer = Attribution(user="u", conversation=["c"])  # type: ignore[arg-type]
        with in_force(payer):
            ledger.reserve(model="gpt-4o", input_tokens=1000, max_output_tokens=1000)

    with pytest.raises(InvalidInputError) as e:
        reserve_under_a_list_conversation()
    assert e.value.field == "conversation"
    assert ledger.state().used == {"daily_usd": 0}  # nothing held for a lease


def test_valid_ids_in_force_are_charged_on_reserve_and_commit() -> None:
    ledger = Ledger("memory://", policy=BudgetPolicy(daily_usd="1"))
    payer = Attribution(
        tenant="acme", feature="support", user="zoë", conversation="c-1", overhead="summariser"
    )
    with in_force(payer):
        assert current_attribution() is payer
        r = ledger.reserve(model="gpt-4o", input_tokens=1000, max_output_tokens=1000)
        ledger.commit(r, Usage(input_tokens=1000, output_tokens=10))
    assert (r.feature, r.user, r.conversation) == ("support", "zoë", "c-1")
    assert ledger.state().used["daily_usd"] > 0
    assert Attribution() == Attribution(feature=None, user=None)
