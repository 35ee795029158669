"""``Ledger.check`` answers as ``reserve`` would (refusals, per-call limits, the worst case, the
ladder's step with the call counted in) and holds nothing, not even for a moment: checks running
alongside never make a real reservation that fits fail."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tokenbudget_core import BudgetCheck
from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget, Ladder
from tokenbudget_core.errors import BudgetExceededError, InvalidInputError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")

CALL: dict[str, Any] = {"model": "gpt-4o", "input_tokens": 1_000, "max_output_tokens": 500}  # $0.0075


@pytest.fixture(params=["memory", "sqlite"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'ledger.db'}"
    policy = BudgetPolicy(
        daily_usd=Decimal("0.01"),
        features={"capped": FeatureBudget(max_output_tokens_per_call=100)},
        ladder=Ladder(cheaper_tier=0.5, smaller_context=None, cache_only=None, soft_refusal=None),
    )
    led = Ledger(url, policy=policy)
    yield led
    led.close()


def test_a_check_answers_as_reserve_and_holds_nothing(ledger: Ledger) -> None:
    before = ledger.state()
    checked = ledger.check(**CALL)
    assert isinstance(checked, BudgetCheck)
    assert ledger.state() == before  # nothing reserved
    reserved = ledger.reserve(**CALL)
    assert checked.worst_case_usd == reserved.reserved_usd == Decimal("0.0075")
    assert (checked.input_tokens, checked.max_output_tokens) == (1_000, 500)
    assert checked.step == reserved.step == "cheaper_tier"  # 75% of the daily budget with the call in
    ledger.release(reserved)


def test_a_check_refuses_what_reserve_refuses_with_the_same_figures(ledger: Ledger) -> None:
    held = ledger.reserve(**CALL)
    with pytest.raises(BudgetExceededError) as checked:
        ledger.check(**CALL)
    with pytest.raises(BudgetExceededError) as reserved:
        ledger.reserve(**CALL)
    assert str(checked.value) == str(reserved.value)
    assert checked.value.budget == "daily_usd"
    ledger.release(held)
    assert ledger.check(**CALL).step == "cheaper_tier"  # room again once released


def test_a_check_applies_per_call_limits_and_the_call_defaults(ledger: Ledger) -> None:
    with pytest.raises(BudgetExceededError) as e:
        ledger.check(**CALL, feature="capped")
    assert e.value.budget == "max_output_tokens_per_call"
    # no max_output_tokens: the feature's per-call limit is the worst case, as reserve takes it
    capped = ledger.check(model="gpt-4o", input_tokens=1_000, feature="capped")
    assert capped.max_output_tokens == 100
    reserved = ledger.reserve(model="gpt-4o", input_tokens=1_000, feature="capped")
    assert capped.worst_case_usd == reserved.reserved_usd


def test_a_check_counts_committed_spend(ledger: Ledger) -> None:
    r = ledger.reserve(model="gpt-4o", input_tokens=1_000, max_output_tokens=100)
    ledger.commit(r, Usage(input_tokens=1_000, output_tokens=100))  # $0.0035 spent
    with pytest.raises(BudgetExceededError):
        ledger.check(**CALL)  # 0.0035 + 0.0075 > 0.01
    assert ledger.check(model="gpt-4o", input_tokens=1_000, max_output_tokens=100).step == "cheaper_tier"


def test_concurrent_checks_never_make_a_fitting_reserve_fail(ledger: Ledger) -> None:
    stop = threading.Event()
    errors: list[BaseException] = []

    def checker() -> None:
        while not stop.is_set():
            try:
                ledger.check(**CALL)
            except BudgetExceededError:
                pass  # refused while the reserve below holds: that is right
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)
                return

    threads = [threading.Thread(target=checker) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for _ in range(60):
            ledger.release(ledger.reserve(**CALL))  # fits every time: a check never holds the room
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []


def test_acheck_is_the_async_twin(ledger: Ledger) -> None:
    assert asyncio.run(ledger.acheck(**CALL)) == ledger.check(**CALL)


def test_bad_arguments_are_named(ledger: Ledger) -> None:
    with pytest.raises(InvalidInputError) as e:
        ledger.check(model="gpt-4o", input_tokens=-1, max_output_tokens=10)
    assert e.value.field == "input_tokens"
    with pytest.raises(InvalidInputError) as e:
        ledger.check(model="gpt-4o", input_tokens=10, max_output_tokens=10, user=42)  # type: ignore[arg-type]
    assert e.value.field == "user"
