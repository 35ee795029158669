"""Once a budget is past an alert threshold, later commits that day do not ask the store to mark
that alert again: one ``mark_once`` per threshold, limit and day and ledger (on Redis each was a
round trip, two per call past 100%), while the alerts themselves still fire once per day, again
on the next day and again at a raised limit's thresholds."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from tokenbudget_core.alerts import Alert
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.stores.memory import MemoryStore
from tokenbudget_core.stores.sqlite import SQLiteStore
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")

DAY = 1_795_046_400.0  # 2026-11-19 00:00 UTC


class CountingSQLite(SQLiteStore):
    """A real SQLite store that counts the marks it is asked for."""

    marks: list[str]

    def mark_once(self, key: str, ttl_s: int) -> bool:
        self.marks.append(key)
        return super().mark_once(key, ttl_s)


class CountingMemory(MemoryStore):
    marks: list[str]

    def mark_once(self, key: str, ttl_s: int) -> bool:
        self.marks.append(key)
        return super().mark_once(key, ttl_s)


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> SQLiteStore | MemoryStore:
    made = CountingSQLite(f"sqlite:///{tmp_path / 'l.db'}") if request.param == "sqlite" else CountingMemory()
    made.marks = []
    return made


def _alert_marks(store: SQLiteStore | MemoryStore) -> list[str]:
    return [k for k in store.marks if k.startswith("alert/")]  # type: ignore[union-attr]


def test_a_budget_past_its_thresholds_is_marked_once_per_threshold(
    store: SQLiteStore | MemoryStore, tmp_path: Path
) -> None:
    alerts: list[Alert] = []
    clock = Clock(DAY + 3_600)
    ledger = Ledger(
        store, policy=BudgetPolicy(user_daily_tokens=100), alerts=[alerts.append], clock=clock,
        spool_path=tmp_path / "spool",
    )  # fmt: skip
    held = [ledger.reserve(model="gpt-4o", input_tokens=0, max_output_tokens=0, user="u") for _ in range(30)]
    for r in held:  # 10 tokens a call: 80% at the 8th, 100% at the 10th, then 20 more past it
        ledger.record(Usage(input_tokens=10), model="gpt-4o", user="u")
        ledger.commit(r, Usage(input_tokens=0))  # a commit past the thresholds too
    assert [(a.budget, a.threshold) for a in alerts] == [
        ("user_daily_tokens (all features)", 0.8),
        ("user_daily_tokens (all features)", 1.0),
    ]
    assert len(_alert_marks(store)) == 2  # not one per commit past each threshold
    # the next day alerts again (its own marks), and the memo keeps no more than two days
    for day in range(1, 4):
        clock.t = DAY + day * 86_400 + 3_600
        for _ in range(12):
            ledger.record(Usage(input_tokens=10), model="gpt-4o", user="u")
    assert len(alerts) == 2 + 3 * 2
    assert len(_alert_marks(store)) == 2 + 3 * 2
    assert len(ledger._alerts_marked) <= 2
    ledger.close()


def test_a_limit_raised_during_the_day_is_marked_and_alerts_at_its_own_thresholds(
    store: SQLiteStore | MemoryStore, tmp_path: Path
) -> None:
    alerts: list[Alert] = []
    ledger = Ledger(
        store, policy=BudgetPolicy(daily_usd=Decimal("0.001")), alerts=[alerts.append],
        clock=lambda: DAY + 60, spool_path=tmp_path / "spool",
    )  # fmt: skip
    for _ in range(5):  # $0.00025 each: past 100% of $0.001
        ledger.record(Usage(input_tokens=100), model="gpt-4o")
    ledger.policy = BudgetPolicy(daily_usd=Decimal("0.0015"))
    for _ in range(5):
        ledger.record(Usage(input_tokens=100), model="gpt-4o")
    assert [(a.limit, a.threshold) for a in alerts] == [
        ("0.001", 0.8), ("0.001", 1.0), ("0.0015", 0.8), ("0.0015", 1.0),
    ]  # fmt: skip
    assert len(_alert_marks(store)) == 4
    ledger.close()


def test_a_mark_another_ledger_set_is_remembered_too(tmp_path: Path) -> None:
    store = CountingSQLite(f"sqlite:///{tmp_path / 'l.db'}")
    store.marks = []
    mine: list[Alert] = []
    ledger = Ledger(
        store, policy=BudgetPolicy(daily_usd=Decimal("0.001")), alerts=[mine.append],
        clock=lambda: DAY + 60, spool_path=tmp_path / "spool",
    )  # fmt: skip
    other = Ledger(
        f"sqlite:///{tmp_path / 'l.db'}", policy=BudgetPolicy(daily_usd=Decimal("0.001")),
        alerts=[lambda a: None], clock=lambda: DAY + 60, spool_path=tmp_path / "spool2",
    )  # fmt: skip
    for _ in range(5):  # the other ledger crosses both thresholds: its sinks got the alerts
        other.record(Usage(input_tokens=100), model="gpt-4o")
    for _ in range(10):
        ledger.record(Usage(input_tokens=100), model="gpt-4o")
    assert mine == []  # once per store
    assert len(_alert_marks(store)) == 2  # and asked once per threshold
    other.close()
    ledger.close()


def test_the_memory_lane_marks_once_per_threshold_too() -> None:
    store = MemoryStore()  # the exact type: reserve and commit take the ledger's lane
    marks: list[str] = []
    real = store.mark_once

    def counting(key: str, ttl_s: int) -> bool:
        marks.append(key)
        return real(key, ttl_s)

    store.mark_once = counting  # type: ignore[method-assign]  # a wrapper of the real store's own
    alerts: list[Alert] = []
    ledger = Ledger(store, policy=BudgetPolicy(user_daily_tokens=1_000), alerts=[alerts.append])
    held = [ledger.reserve(model="gpt-4o", input_tokens=0, max_output_tokens=10, user="u") for _ in range(30)]
    for r in held:
        charge = ledger.commit(r, Usage(input_tokens=40))
        assert charge.applied
    assert ledger._lanes  # the lane answered
    assert [a.threshold for a in alerts] == [0.8, 1.0]
    assert len([k for k in marks if k.startswith("alert/")]) == 2
