"""Releases of reserves whose answers were lost (the store ran them, then timed out).

``abandon`` of one lost across midnight releases the id on the day the reserve was made (it
released only on the day ``abandon`` was called, so yesterday's worst case stayed held for its
whole lease); after a long outage the releases are spread over the calls that follow."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget
from tokenbudget_core.errors import BudgetExceededError, BudgetUnavailableError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report
from tokenbudget_core.stores.sqlite import SQLiteStore
from tokenbudget_core.usage import Usage

BEFORE_MIDNIGHT = datetime(2026, 11, 18, 23, 59, 55, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, at: float) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


class LosesReserveAnswers(SQLiteStore):
    """The real SQLite store; while ``stalled``, a reserve runs, then its answer is lost after a
    10 s stall (a timeout), as a network store's can be."""

    def __init__(self, url: str, clock: Clock) -> None:
        super().__init__(url)
        self.clock, self.stalled = clock, False

    def reserve(self, req: Any) -> Any:
        outcome = super().reserve(req)
        if self.stalled:
            self.clock.at += 10
            raise BudgetUnavailableError(self.url, "timed out")
        return outcome


@pytest.mark.parametrize("lease", [600, 2 * 86_400])
@pytest.mark.parametrize("start", [BEFORE_MIDNIGHT, BEFORE_MIDNIGHT - 3600])
def test_an_abandoned_reserve_is_released_on_its_own_day(start: float, lease: int, tmp_path: Path) -> None:
    clock = Clock(start)
    store = LosesReserveAnswers(f"sqlite:///{tmp_path / 'l.db'}", clock)
    ledger = Ledger(store, clock=clock, spool_path=tmp_path / "s", lease_seconds=lease)
    day = ledger.day()
    store.stalled = True
    with pytest.raises(BudgetUnavailableError):
        ledger.reserve(
            model="gpt-4o-mini", input_tokens=1000, max_output_tokens=1000, user="u", request_id="run-1"
        )
    ledger.abandon("run-1")  # what an adapter does with its own run id
    store.stalled = False
    ledger.reserve(model="gpt-4o-mini", input_tokens=1, max_output_tokens=1, user="v")  # the store answers
    ((_, reserved),) = store.totals(day, [("U/u", "tokens")], int(clock() * 1000)).values()
    assert reserved == 0
    ledger.close()


def test_after_a_long_outage_the_releases_are_spread_over_the_next_calls(tmp_path: Path) -> None:
    """600 reserves whose answers were lost: the first call that reaches the store again releases
    a bounded share of them (not all 600 on that one caller's time); later calls release the rest."""
    clock = Clock(BEFORE_MIDNIGHT - 7200)
    store = LosesReserveAnswers(f"sqlite:///{tmp_path / 'l.db'}", clock)
    ledger = Ledger(store, clock=clock, spool_path=tmp_path / "s")
    day = ledger.day()
    store.stalled = True
    for _ in range(600):
        with pytest.raises(BudgetUnavailableError):
            ledger.reserve(model="gpt-4o-mini", input_tokens=10, max_output_tokens=0, user="u")
        clock.at -= 10  # keep the day (the stall moves the clock on)
    store.stalled = False

    def held() -> int:
        ((_, reserved),) = store.totals(day, [("U/u", "tokens")], int(clock() * 1000)).values()
        return reserved

    assert held() == 6000
    ledger.reserve(model="gpt-4o-mini", input_tokens=1, max_output_tokens=1, user="v")
    assert 0 < held() < 6000  # some released, not all on this call
    for _ in range(5):
        if not held():
            break
        time.sleep(1.05)  # the ledger looks at most once a second
        ledger.reserve(model="gpt-4o-mini", input_tokens=1, max_output_tokens=1, user="v")
    assert held() == 0
    ledger.close()


class DownForCommits(SQLiteStore):
    """The real SQLite store; while ``down``, a commit fails as unreachable (it is spooled)."""

    down = False

    def commit(self, req: Any) -> Any:
        if self.down:
            raise BudgetUnavailableError(self.url, "down")
        return super().commit(req)


def test_after_a_long_outage_the_spool_is_replayed_a_share_at_a_time(tmp_path: Path) -> None:
    """2,500 commits spooled: the first call that reaches the store again replays a bounded share
    of them on its own time; ``replay_spool()`` (the app's choice of time) replays the rest."""
    store = DownForCommits(f"sqlite:///{tmp_path / 'l.db'}")
    ledger = Ledger(store, spool_path=tmp_path / "s.jsonl")
    store.down = True
    for _ in range(2_500):
        assert ledger.record(Usage(input_tokens=1), model="gpt-4o-mini", user="u").spooled
    store.down = False

    def recorded() -> int:
        return build_report(ledger, day=ledger.day()).totals.requests

    ledger.record(Usage(input_tokens=1), model="gpt-4o-mini", user="v")  # reaches the store
    first = recorded()
    assert 1 < first < 2_501  # some replayed on this call, not all 2,500
    assert ledger.replay_spool() == 2_501 - first
    assert recorded() == 2_501
    ledger.close()


def a_user_with_1000_tokens(tmp_path: Path) -> tuple[Clock, LosesReserveAnswers, Ledger]:
    """A ledger on a store that can lose reserve answers, user ``u`` allowed 1,000 tokens a day."""
    clock = Clock(BEFORE_MIDNIGHT - 7200)
    store = LosesReserveAnswers(f"sqlite:///{tmp_path / 'l.db'}", clock)
    policy = BudgetPolicy(default_feature=FeatureBudget(user_daily_tokens=1000))
    return clock, store, Ledger(store, clock=clock, policy=policy, spool_path=tmp_path / "s")


def lose_the_answer(store: LosesReserveAnswers, ledger: Ledger, call: dict[str, Any]) -> None:
    """Reserve ``call`` under ``run-1``: the store runs it, and its answer is lost."""
    store.stalled = True
    with pytest.raises(BudgetUnavailableError):
        ledger.reserve(**call, request_id="run-1")
    store.stalled = False


def test_a_reserve_retried_after_its_answer_was_lost_gets_its_reservation(tmp_path: Path) -> None:
    """The store ran the reserve and its answer was lost; the caller retries the same call under
    the same id once the store answers: it gets the reservation, held once (it was refused as
    another's hold, counted twice, and then a fresh id was soft-refused on that double count)."""
    clock, store, ledger = a_user_with_1000_tokens(tmp_path)
    call = {"model": "gpt-4o-mini", "input_tokens": 500, "max_output_tokens": 100, "user": "u"}
    lose_the_answer(store, ledger, call)
    held = ledger.reserve(**call, request_id="run-1")
    assert (held.request_id, held.input_tokens, held.max_output_tokens) == ("run-1", 500, 100)
    assert held.step == "cheaper_tier"  # 600 of 1000: the ladder's step, read with the hold in the store
    ((_, reserved),) = store.totals(held.day, [("U/u", "tokens")], int(clock() * 1000)).values()
    assert reserved == 600  # one hold
    ledger.commit(held, Usage(input_tokens=500, output_tokens=50))


def test_a_retry_after_a_lost_answer_is_soft_refused_as_a_fresh_reserve_would_be(tmp_path: Path) -> None:
    clock, store, ledger = a_user_with_1000_tokens(tmp_path)
    call = {"model": "gpt-4o-mini", "input_tokens": 900, "max_output_tokens": 80, "user": "u"}
    lose_the_answer(store, ledger, call)  # 980 of 1000: past the 97% soft share
    with pytest.raises(BudgetExceededError) as refused:
        ledger.reserve(**call, request_id="run-1")
    assert refused.value.step == "soft_refusal"
    ((_, reserved),) = store.totals(ledger.day(), [("U/u", "tokens")], int(clock() * 1000)).values()
    assert reserved == 0  # its hold given back, as a fresh reserve's is
