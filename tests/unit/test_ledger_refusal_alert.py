"""A budget that refuses calls says so, once per budget and day: spending stops short of the
limit while calls are refused (the default ladder refuses from 97%), so the alerts on spend
(80%, 100%) may never tell the operator that users are being turned away."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenbudget_core.alerts import Alert
from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget, Ladder
from tokenbudget_core.errors import BudgetExceededError, BudgetUnavailableError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.stores.sqlite import SQLiteStore
from tokenbudget_core.usage import Usage

POLICY = BudgetPolicy(default_feature=FeatureBudget(user_daily_tokens=1000))


def reserve(ledger: Ledger, tokens: int) -> None:
    ledger.reserve(model="gpt-4o-mini", input_tokens=tokens, max_output_tokens=0, user="u-1")


@pytest.mark.parametrize("url", ["memory://", "sqlite"])
def test_a_budget_refusing_calls_is_told_once_a_day(url: str, tmp_path: Path) -> None:
    got: list[Alert] = []
    store = url if url == "memory://" else f"sqlite:///{tmp_path / 'l.db'}"
    ledger = Ledger(store, policy=POLICY, alerts=[got.append], spool_path=tmp_path / "s")
    ledger.record(Usage(input_tokens=960), model="gpt-4o-mini", user="u-1")
    assert [(a.threshold, a.refusing) for a in got] == [(0.8, False)]
    for _ in range(5):  # soft refusals: 960 + 40 would pass the 97% share
        with pytest.raises(BudgetExceededError):
            reserve(ledger, 40)
    refusing = [a for a in got if a.refusing]
    assert len(refusing) == 1
    (alert,) = refusing
    assert (alert.budget, alert.user, alert.used, alert.limit) == (
        "user_daily_tokens",
        "u-1",
        "960",
        "1000",
    )
    assert alert.threshold == pytest.approx(0.96)
    assert alert.id != got[0].id
    assert not any(a.threshold >= 1 and not a.refusing for a in got)  # spend never reached 100%


def test_a_hard_refusal_is_told_too(tmp_path: Path) -> None:
    got: list[Alert] = []
    policy = BudgetPolicy(
        default_feature=FeatureBudget(user_daily_tokens=1000),
        ladder=Ladder(cache_only=None, soft_refusal=None),
    )
    ledger = Ledger("memory://", policy=policy, alerts=[got.append], spool_path=tmp_path / "s")
    reserve(ledger, 900)
    with pytest.raises(BudgetExceededError):
        reserve(ledger, 200)
    assert [(a.refusing, a.used) for a in got] == [(True, "900")]


def test_two_ledgers_on_one_file_tell_it_once(tmp_path: Path) -> None:
    got: list[Alert] = []
    url = f"sqlite:///{tmp_path / 'l.db'}"
    first, second = (
        Ledger(url, policy=POLICY, alerts=[got.append], spool_path=tmp_path / f"s{i}") for i in range(2)
    )
    first.record(Usage(input_tokens=990), model="gpt-4o-mini", user="u-1")
    for ledger in (first, second, first, second):
        with pytest.raises(BudgetExceededError):
            reserve(ledger, 20)
    assert len([a for a in got if a.refusing]) == 1


class _TotalsDown(SQLiteStore):
    """The real SQLite store, whose totals read fails (a blip right after a reserve)."""

    def totals(self, *args: object, **kwargs: object) -> dict:  # type: ignore[type-arg]
        raise BudgetUnavailableError(self.url, "blip")


def test_a_soft_refusal_stands_when_its_figures_cannot_be_read(tmp_path: Path) -> None:
    """A fail-open ledger whose store blips while a soft refusal reads its figures still refuses
    the call (it was a BudgetUnavailableError telling the user to fail open, which they had)."""
    ledger = Ledger(
        _TotalsDown(f"sqlite:///{tmp_path / 'l.db'}"),
        policy=POLICY,
        on_unavailable="open",
        spool_path=tmp_path / "s",
    )
    ledger.record(Usage(input_tokens=960), model="gpt-4o-mini", user="u-1")
    with pytest.raises(BudgetExceededError) as refused:
        reserve(ledger, 40)
    assert refused.value.step == "soft_refusal"
    assert refused.value.used == 960  # from the reserve's own answer


def test_a_call_too_big_for_a_fresh_budget_does_not_use_up_the_days_refusing_alert(tmp_path: Path) -> None:
    """One call bigger than the whole budget is refused with nothing used: that says nothing of
    the budget running out, so the refusing alert waits for the real one."""
    got: list[Alert] = []
    ledger = Ledger("memory://", policy=POLICY, alerts=[got.append], spool_path=tmp_path / "s")
    with pytest.raises(BudgetExceededError):
        reserve(ledger, 5_000)
    assert not [a for a in got if a.refusing]
    ledger.record(Usage(input_tokens=960), model="gpt-4o-mini", user="u-1")
    with pytest.raises(BudgetExceededError):
        reserve(ledger, 40)
    assert [a.used for a in got if a.refusing] == ["960"]


@pytest.mark.parametrize(
    "policy",
    [
        BudgetPolicy(
            default_feature=FeatureBudget(user_daily_tokens=1000),
            ladder=Ladder(cheaper_tier=None, smaller_context=None, cache_only=None, soft_refusal=0.6),
        ),
        BudgetPolicy(default_feature=FeatureBudget(user_daily_tokens=1000), alert_thresholds=(1.0,)),
    ],
    ids=["refusing-below-the-alert-thresholds", "only-a-100-percent-threshold"],
)
def test_a_budget_refusing_below_its_alert_thresholds_still_says_so(
    policy: BudgetPolicy, tmp_path: Path
) -> None:
    got: list[Alert] = []
    ledger = Ledger("memory://", policy=policy, alerts=[got.append], spool_path=tmp_path / "s")
    ledger.record(
        Usage(input_tokens=960 if policy.alert_thresholds == (1.0,) else 590), model="gpt-4o-mini", user="u-1"
    )
    for _ in range(3):
        with pytest.raises(BudgetExceededError):
            reserve(ledger, 40)
    assert len([a for a in got if a.refusing]) == 1


class _ReleaseDown(SQLiteStore):
    """The real SQLite store, whose releases fail (a blip as a refused call's hold is given back)."""

    def release(self, *args: object, **kwargs: object) -> bool:  # type: ignore[override]
        raise BudgetUnavailableError(self.url, "blip")


def test_a_retry_of_a_call_refused_at_cache_only_whose_hold_stayed_says_cache_only(tmp_path: Path) -> None:
    """(review s31) A call refused at ``cache_only`` whose hold could not be given back, retried
    under its request id, was refused again as ``soft_refusal``: an app showing one message per
    step showed the wrong one. The first refusal counted the call's own hold as used before it;
    a retry is told the totals as they are (its earlier hold among them)."""
    ledger = Ledger(
        _ReleaseDown(f"sqlite:///{tmp_path / 'l.db'}"),
        policy=BudgetPolicy(default_feature=FeatureBudget(user_daily_tokens=1000)),
        alerts=[],
        spool_path=tmp_path / "s",
    )
    ledger.record(Usage(input_tokens=850), model="gpt-4o-mini", user="u-1")
    steps = []
    for _ in range(2):
        with pytest.raises(BudgetExceededError) as refused:
            ledger.reserve(
                model="gpt-4o-mini", input_tokens=60, max_output_tokens=0, user="u-1", request_id="r-1"
            )
        steps.append((refused.value.step, refused.value.used))
    assert steps == [("cache_only", 850), ("cache_only", 910)]
