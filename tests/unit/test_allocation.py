"""allocate_budget / Allocation: fixed and proportional shares, exact sums, rebalancing, errors."""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenbudget_core import TokenCounter, get_model
from tokenbudget_core.allocation import PARTS, Allocation, allocate_budget
from tokenbudget_core.errors import InvalidInputError, UnknownModelError


def test_fixed_shares_then_fractions_of_the_rest_and_leftover_to_history() -> None:
    a = allocate_budget(10_000, reserve_output=1_000, shares={"system": 500, "context": 0.5, "examples": 0.1})
    # 10_000 - 1_000 - 500 = 8_500 shared: context 4_250, examples 850, history the remaining 40%.
    assert a.as_dict() == {
        "system": 500,
        "examples": 850,
        "context": 4_250,
        "history": 3_400,
        "user": 0,
        "output": 1_000,
    }
    assert list(a.as_dict()) == list(PARTS)
    assert sum(a.as_dict().values()) == a.total == 10_000
    assert a.prompt == 9_000


def test_no_shares_gives_everything_but_the_output_to_history() -> None:
    a = allocate_budget(4_096, reserve_output=96)
    assert (a.history, a.output, a.system, a.context) == (4_000, 96, 0, 0)


def test_leftover_can_go_to_another_part() -> None:
    a = allocate_budget(1_000, shares={"history": 0.25}, leftover="context")
    assert (a.history, a.context) == (250, 750)


def test_rounding_is_largest_remainder_with_ties_in_document_order() -> None:
    a = allocate_budget(5, shares={"examples": 0.5, "context": 0.5})
    assert (a.examples, a.context, a.history) == (3, 2, 0)  # 2.5 each: the tie goes to examples
    b = allocate_budget(100, shares={"context": 0.335, "examples": 0.335})
    # quotas 33.5, 33.5, history 33.0: one token left by flooring, the tie goes to examples
    assert (b.examples, b.context, b.history) == (34, 33, 33)
    assert allocate_budget(100, shares={"context": 0.335, "examples": 0.335}) == b  # deterministic


def test_fractions_are_exact_decimals() -> None:
    # 0.1 + 0.2 + 0.7 is 1.0000000000000002 in floats; as decimals it is exactly 1: nothing left over.
    a = allocate_budget(1_000, shares={"examples": 0.1, "context": 0.2, "history": 0.7})
    assert (a.examples, a.context, a.history) == (100, 200, 700)


def test_total_from_a_model_uses_its_window_and_max_output() -> None:
    info = get_model("gpt-4o")
    a = allocate_budget("gpt-4o", shares={"context": 0.5})
    assert a.total == info.context_window == 128_000
    assert a.output == info.max_output_tokens == 16_384
    assert allocate_budget("gpt-4o", reserve_output=1_000).output == 1_000
    assert allocate_budget(TokenCounter.for_model("gpt-4o")) == allocate_budget("gpt-4o")
    assert allocate_budget(info).total == 128_000
    assert allocate_budget(8_000).output == 0  # a plain total reserves nothing by default


@pytest.mark.parametrize(
    ("kwargs", "field", "words"),
    [
        ({"shares": {"prompt": 100}}, "shares['prompt']", "unknown part"),
        ({"shares": {"context": -5}}, "shares['context']", "non-negative"),
        ({"shares": {"context": 1.5}}, "shares['context']", "(0, 1]"),
        ({"shares": {"context": 0.0}}, "shares['context']", "int 0"),
        ({"shares": {"context": True}}, "shares['context']", "int (tokens) or a float"),
        ({"shares": {"context": "half"}}, "shares['context']", "int (tokens) or a float"),
        ({"shares": {"context": 0.7, "examples": 0.4}}, "shares", "sum to 1.1"),
        ({"shares": {"system": 900, "user": 200}}, "shares", "need 1100 tokens but the total is 1000"),
        ({"reserve_output": 1_001}, "reserve_output", "total is 1000"),
        ({"reserve_output": -1}, "reserve_output", "non-negative"),
        ({"reserve_output": 10, "shares": {"output": 10}}, "shares['output']", "given twice"),
        ({"shares": {"output": 0.5}}, "shares['output']", "fixed tokens"),
        ({"leftover": "memory"}, "leftover", "unknown part"),
        ({"shares": [("context", 0.5)]}, "shares", "dict"),
    ],
)
def test_errors_name_the_field_and_the_fix(kwargs: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        allocate_budget(1_000, **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert words in str(info.value)
    assert info.value.fix
    assert isinstance(info.value, ValueError)


def test_bad_totals() -> None:
    for bad in (-1, True, 3.5, None):
        with pytest.raises(InvalidInputError) as info:
            allocate_budget(bad)  # type: ignore[arg-type]
        assert info.value.field == "total"
    with pytest.raises(UnknownModelError):
        allocate_budget("no-such-model-xyz")


def test_rebalance_moves_unused_fixed_tokens_to_the_proportional_parts() -> None:
    a = allocate_budget(1_000, shares={"system": 300, "user": 100, "context": 0.25})
    # pool 600: context 150, history 450
    b = a.rebalance(used={"system": 120, "user": 40})
    assert (b.system, b.user) == (120, 40)
    # 240 freed, shared 1:3 like the fractions
    assert (b.context, b.history) == (150 + 60, 450 + 180)
    assert sum(b.as_dict().values()) == b.total == 1_000
    assert a.system == 300  # the original is unchanged (a value type)


def test_rebalanced_parts_stop_receiving() -> None:
    a = allocate_budget(1_000, shares={"context": 0.5})
    b = a.rebalance(used={"context": 100})
    assert (b.context, b.history) == (100, 900)
    assert dict(b.weights) == {"history": 0.5}
    c = b.rebalance(used={"history": 500})  # no proportional part left: the leftover part takes it
    assert (c.context, c.history) == (100, 900)
    d = b.rebalance(used={"history": 500}, to="examples")
    assert (d.history, d.examples) == (500, 400)


def test_rebalance_errors_name_the_field() -> None:
    a = allocate_budget(1_000, shares={"system": 100})
    with pytest.raises(InvalidInputError, match="exceed the part's allocation of 100") as info:
        a.rebalance(used={"system": 101})
    assert info.value.field == "used['system']"
    with pytest.raises(InvalidInputError) as info:
        a.rebalance(used={"sytem": 1})
    assert info.value.field == "used['sytem']"
    with pytest.raises(InvalidInputError) as info:
        a.rebalance(used={"system": 10}, to=["system"])
    assert info.value.field == "to"
    with pytest.raises(InvalidInputError) as info:
        a.rebalance(used={"system": 10}, to=[])
    assert info.value.field == "to"


def test_fill_gives_each_part_what_it_needs_and_passes_the_rest_on() -> None:
    a = allocate_budget(1_000, shares={"context": 0.5, "examples": 0.2})  # 500 / 200 / history 300
    b = a.fill({"context": 100, "examples": 900, "history": 350})
    # context needs 100: 400 go to examples and history 2:3 -> 360, 540; history then needs only 350.
    assert (b.context, b.history) == (100, 350)
    assert b.examples == 1_000 - 100 - 350
    unshared = allocate_budget(1_000, shares={"context": 0.5})
    c = unshared.fill({"context": 2_000, "history": 2_000, "examples": 50})
    assert c.examples == 0  # a part without a share gets nothing while the others are short
    d = unshared.fill({"context": 200, "history": 300, "examples": 5_000})
    assert d.examples == 500  # ...and everything once they are satisfied


def test_allocation_is_a_frozen_keyword_only_value() -> None:
    a = allocate_budget(100)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.system = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        Allocation(100, 0, 0, 0, 100, 0, 0)  # type: ignore[call-arg]


shares_strategy = st.dictionaries(
    st.sampled_from(["system", "examples", "context", "history", "user"]),
    st.one_of(st.integers(0, 3_000), st.floats(0.01, 0.6)),
    max_size=5,
)


@settings(max_examples=60, deadline=None)
@given(total=st.integers(0, 200_000), reserve=st.integers(0, 5_000), shares=shares_strategy)
def test_parts_always_sum_to_the_total(total: int, reserve: int, shares: dict[str, int | float]) -> None:
    fixed = reserve + sum(v for v in shares.values() if isinstance(v, int))
    ratio = sum((Fraction(repr(v)) for v in shares.values() if isinstance(v, float)), Fraction(0))
    if fixed > total or ratio > 1:
        with pytest.raises(InvalidInputError):
            allocate_budget(total, reserve_output=reserve, shares=shares)
        return
    a = allocate_budget(total, reserve_output=reserve, shares=shares)
    parts = a.as_dict()
    assert sum(parts.values()) == total
    assert parts["output"] == reserve
    pool = total - fixed
    for part in PARTS[:-1]:  # output checked above
        share = shares.get(part, 0)
        leftover = pool * (1 - ratio) if part == "history" else Fraction(0)  # on top of history's share
        quota = share + leftover if isinstance(share, int) else pool * Fraction(repr(share)) + leftover
        assert abs(parts[part] - quota) < 1  # floor or ceiling of the exact quota
    used = {p: n // 2 for p, n in parts.items() if isinstance(shares.get(p), int)}
    b = a.rebalance(used=used)
    assert sum(b.as_dict().values()) == total
    receivers = [p for p, _ in a.weights if p not in used]
    for p, n in used.items():
        # with no proportional part left to take them, freed tokens go to the leftover part
        assert getattr(b, p) == n or (not receivers and p == a.leftover)
