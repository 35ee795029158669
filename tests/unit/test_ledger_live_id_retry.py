"""A reserve under a request id whose reservation is still live is a retry of the call that made
it: it gets that reservation back, or is refused when it asks for another worst case. It never
skips the limits (a call 50x over budget was once granted under a reused id)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from tokenbudget_core.budgets import BudgetPolicy, Ladder
from tokenbudget_core.errors import BudgetExceededError, InvalidInputError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.stores.base import ReserveOutcome, ReserveRequest
from tokenbudget_core.stores.memory import MemoryStore
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")


class _GeneralStore(MemoryStore):
    """The memory store seen as any store: no lane."""


@pytest.fixture(params=["memory", "memory-general", "sqlite", "redis"])
def store_of(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[Ledger]]:
    """Ledgers opened on one store (as other processes would), closed after the test."""
    ledgers: list[Ledger] = []
    if request.param == "redis":
        request.getfixturevalue("clean_redis_url")
    ledgers.append(Ledger(_store(request, tmp_path)))  # holds the store's name
    yield ledgers
    for ledger in ledgers:
        ledger.close()


def _store(request: pytest.FixtureRequest, tmp_path: Path) -> object:
    if request.param == "redis":
        return request.getfixturevalue("clean_redis_url")
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'l.db'}"
    return MemoryStore() if request.param == "memory" else _GeneralStore()


def _ledger(store_of: list[Ledger], policy: BudgetPolicy) -> Ledger:
    store = store_of[0].store
    ledger = Ledger(store.url if not isinstance(store, MemoryStore) else store, policy=policy)
    store_of.append(ledger)
    return ledger


@pytest.mark.parametrize("batch", [False, True])
def test_a_bigger_call_under_a_live_id_is_refused_and_nothing_more_is_held(
    store_of: list[Ledger], batch: bool
) -> None:
    ledger = _ledger(store_of, BudgetPolicy(user_daily_tokens=1_000))
    ledger.reserve(model="gpt-4o", input_tokens=10, max_output_tokens=10, user="u", request_id="run-1")
    big = {"model": "gpt-4o", "input_tokens": 50_000, "max_output_tokens": 1_000, "user": "u"}
    with pytest.raises(BudgetExceededError):
        ledger.reserve(**big, request_id="run-2")  # type: ignore[arg-type]
    if batch:
        [error] = ledger.reserve_many([{**big, "request_id": "run-1"}])
    else:
        with pytest.raises(InvalidInputError) as e:
            ledger.reserve(**big, request_id="run-1")  # type: ignore[arg-type]
        error = e.value
    assert isinstance(error, InvalidInputError)
    assert error.field == "request_id"
    assert "different worst case" in str(error)
    assert "fresh request id" in str(error)
    assert ledger.state(user="u").used == {"user_daily_tokens (all features)": 20}  # the first call's hold


def test_a_bigger_call_under_a_live_id_another_ledger_made_is_checked_next_to_its_hold(
    store_of: list[Ledger],
) -> None:
    """A ledger that did not make the live reservation (another process) cannot compare the
    worst cases: the call goes out only if it fits next to the hold."""
    first = _ledger(store_of, BudgetPolicy(user_daily_tokens=1_000))
    first.reserve(model="gpt-4o", input_tokens=300, max_output_tokens=0, user="u", request_id="run-1")
    other = _ledger(store_of, BudgetPolicy(user_daily_tokens=1_000, ladder=Ladder(soft_refusal=None)))
    with pytest.raises(InvalidInputError) as e:
        other.reserve(model="gpt-4o", input_tokens=50_000, max_output_tokens=0, user="u", request_id="run-1")
    assert e.value.field == "request_id"
    fits = other.reserve(model="gpt-4o", input_tokens=300, max_output_tokens=0, user="u", request_id="run-1")
    assert fits.input_tokens == 300
    assert first.state(user="u").used == {"user_daily_tokens (all features)": 300}  # held once


def test_a_retry_of_the_same_call_gets_its_reservation_and_commits_once(store_of: list[Ledger]) -> None:
    ledger = _ledger(store_of, BudgetPolicy(user_daily_tokens=1_000))
    call = {
        "model": "gpt-4o",
        "input_tokens": 10,
        "max_output_tokens": 10,
        "user": "u",
        "request_id": "run-1",
    }
    first = ledger.reserve(**call)  # type: ignore[arg-type]
    again = ledger.reserve(**call)  # type: ignore[arg-type]
    assert again == first
    assert ledger.commit(again, Usage(input_tokens=10, output_tokens=5)).applied
    assert ledger.state(user="u").used == {"user_daily_tokens (all features)": 15}


class _NoUsageStore(MemoryStore):
    """A store that reports no usage with a reservation (the contract's optional field)."""

    def reserve(self, req: ReserveRequest) -> ReserveOutcome:
        return dataclasses.replace(super().reserve(req), usage=())


@pytest.mark.parametrize("store", [MemoryStore, _GeneralStore, _NoUsageStore])
def test_a_granted_call_that_fills_the_budget_never_says_hard_refusal(store: type[MemoryStore]) -> None:
    """Also read from the totals (a store that reports no usage), and on a retry: an app
    refusing on ``hard_refusal`` must not drop a call it holds."""
    ladder = Ladder(cache_only=None, soft_refusal=None)
    ledger = Ledger(store(), policy=BudgetPolicy(user_daily_tokens=100, ladder=ladder))
    call = {
        "model": "gpt-4o",
        "input_tokens": 100,
        "max_output_tokens": 0,
        "user": "u",
        "request_id": "req-1",
    }
    first = ledger.reserve(**call)  # type: ignore[arg-type]
    again = ledger.reserve(**call)  # type: ignore[arg-type]
    assert first.step == again.step == "smaller_context"


def test_a_retry_of_a_granted_call_is_granted_as_it_was_not_refused_on_its_own_hold(
    store_of: list[Ledger],
) -> None:
    """Other usage since the call was granted takes the budget past the soft share: the retry
    still gets the reservation it holds (not a refusal counting the call twice, hold kept)."""
    ledger = _ledger(store_of, BudgetPolicy(user_daily_tokens=100))
    call = {"model": "gpt-4o", "input_tokens": 40, "max_output_tokens": 0, "user": "u", "request_id": "req-1"}
    first = ledger.reserve(**call)  # type: ignore[arg-type]
    ledger.record(Usage(input_tokens=58), model="gpt-4o", user="u")  # 98 with the call's 40
    again = ledger.reserve(**call)  # type: ignore[arg-type]
    assert again == first
    assert again.step == "normal"
    assert ledger.commit(again, Usage(input_tokens=40)).applied
    assert ledger.state(user="u").used == {"user_daily_tokens (all features)": 98}
