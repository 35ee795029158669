"""``Ledger.check`` answers from the ledger as it is now (its policy, prices, registry and fail
mode, whenever they were reassigned), and leaves the spool's replay to the ledger itself, whose
alert sinks get the replayed commits' threshold alerts."""

from __future__ import annotations

import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import pytest

from tokenbudget_core.alerts import Alert
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.errors import BudgetExceededError, BudgetUnavailableError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.price_overrides import PriceOverride, PriceTable
from tokenbudget_core.registry import ModelRegistry
from tokenbudget_core.stores.base import CommitOutcome, CommitRequest, Metric
from tokenbudget_core.stores.sqlite import SQLiteStore
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")


class _Flaky(SQLiteStore):
    """A SQLite store whose commits and reads fail while ``down``."""

    down = False

    def commit(self, req: CommitRequest) -> CommitOutcome:
        if self.down:
            raise BudgetUnavailableError("sqlite://flaky", "a blip")
        return super().commit(req)

    def totals(
        self, day: str, scopes: Sequence[tuple[str, Metric]], now_ms: int
    ) -> dict[tuple[str, Metric], tuple[int, int]]:
        if self.down:
            raise BudgetUnavailableError("sqlite://flaky", "a blip")
        return super().totals(day, scopes, now_ms)


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'l.db'}"


def _table(usd_per_mtok: str) -> PriceTable:
    return PriceTable({"gpt-4o": PriceOverride(input_mtok=usd_per_mtok, output_mtok=usd_per_mtok)})


def test_check_uses_prices_reassigned_after_its_first_call(url: str) -> None:
    ledger = Ledger(url, policy=BudgetPolicy(daily_usd=Decimal(1)), prices=_table("1"))
    call = {"model": "gpt-4o", "input_tokens": 1_000, "max_output_tokens": 0}
    assert ledger.check(**call).worst_case_usd == Decimal("0.001")  # type: ignore[arg-type]
    ledger.prices = _table("2000")  # $2 for the call: over the $1 budget
    with pytest.raises(BudgetExceededError) as checked:
        ledger.check(**call)  # type: ignore[arg-type]
    with pytest.raises(BudgetExceededError) as reserved:
        ledger.reserve(**call)  # type: ignore[arg-type]
    assert str(checked.value) == str(reserved.value)
    ledger.close()


def test_check_uses_a_registry_reassigned_after_its_first_call(url: str) -> None:
    def registry(max_output: int) -> ModelRegistry:
        reg = ModelRegistry()
        reg.register("acme", provider="acme", context_window=10_000, max_output_tokens=max_output)
        return reg

    prices = PriceTable({"acme": PriceOverride(input_mtok="1", output_mtok="1")})
    ledger = Ledger(url, registry=registry(10), prices=prices, policy=BudgetPolicy(user_daily_tokens=5_000))
    assert ledger.check(model="acme", input_tokens=100).max_output_tokens == 10
    ledger.registry = registry(999)
    assert ledger.check(model="acme", input_tokens=100).max_output_tokens == 999
    ledger.close()


def test_check_fails_open_once_the_ledger_is_set_to(tmp_path: Path) -> None:
    store = _Flaky(f"sqlite:///{tmp_path / 'l.db'}")
    ledger = Ledger(store, policy=BudgetPolicy(user_daily_tokens=100), spool_path=tmp_path / "spool")
    call = {"model": "gpt-4o", "input_tokens": 1, "max_output_tokens": 0, "user": "u"}
    assert not ledger.check(**call).unchecked  # type: ignore[arg-type]
    store.down = True
    with pytest.raises(BudgetUnavailableError):
        ledger.check(**call)  # type: ignore[arg-type]
    ledger.on_unavailable = "open"
    assert ledger.check(**call).unchecked  # type: ignore[arg-type]
    ledger.close()


def test_a_policy_swapped_while_check_builds_its_checker_reaches_the_next_check(url: str) -> None:
    """A swap from another thread (a budgets.toml reload) landing in the middle of check()'s
    lazy build: the clock, which building the checker reads, swaps the policy at that moment."""
    old, new = BudgetPolicy(user_daily_tokens=1_000_000), BudgetPolicy(user_daily_tokens=10)
    swap: list[Ledger] = []

    def clock() -> float:
        if swap:
            swap.pop().policy = new
        return time.time()

    ledger = Ledger(url, policy=old, clock=clock)
    call = {"model": "gpt-4o", "input_tokens": 100, "max_output_tokens": 0, "user": "u"}
    swap.append(ledger)
    ledger.check(**call)  # type: ignore[arg-type]
    assert not swap  # the swap happened during the check
    with pytest.raises(BudgetExceededError):
        ledger.check(**call)  # type: ignore[arg-type]
    ledger.close()


def test_a_spooled_commit_replayed_when_check_is_the_first_call_after_an_outage_alerts(
    tmp_path: Path,
) -> None:
    store = _Flaky(f"sqlite:///{tmp_path / 'l.db'}")
    alerts: list[Alert] = []
    ledger = Ledger(
        store,
        policy=BudgetPolicy(user_daily_tokens=100),
        alerts=[alerts.append],
        spool_path=tmp_path / "spool",
    )
    r = ledger.reserve(model="gpt-4o", input_tokens=85, max_output_tokens=0, user="u")
    store.down = True
    assert ledger.commit(r, Usage(input_tokens=85)).spooled
    store.down = False
    ledger._next_spool_check = 0.0  # due for a look at once (else within a second)
    ledger.check(model="gpt-4o", input_tokens=1, max_output_tokens=0, user="w")
    ledger.replay_spool()  # whatever the check left
    assert ledger.state(user="u").used == {"user_daily_tokens (all features)": 85}
    assert [(a.budget, a.threshold) for a in alerts] == [("user_daily_tokens (all features)", 0.8)]
    ledger.close()


def test_checks_during_an_outage_orphan_nothing(tmp_path: Path) -> None:
    store = _Flaky(f"sqlite:///{tmp_path / 'l.db'}")
    ledger = Ledger(store, policy=BudgetPolicy(user_daily_tokens=100), spool_path=tmp_path / "spool")
    store.down = True
    for _ in range(3):
        with pytest.raises(BudgetUnavailableError):
            ledger.check(model="gpt-4o", input_tokens=1, max_output_tokens=0)
    assert ledger._checker is not None
    checker = ledger._checker[1]
    assert not checker._orphans
    assert not checker._orphan_ids
    ledger.close()
