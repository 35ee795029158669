"""Ledger edge cases a user runs into: the ladder at exactly 100%, counts that are int subclasses,
ids of the wrong type, malformed batch items, usage recorded after midnight, and calls that name
no user. Each runs on the memory store and on SQLite (the default store)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget, Ladder
from tokenbudget_core.counting import TokenCounter
from tokenbudget_core.errors import BudgetExceededError, InvalidInputError
from tokenbudget_core.ledger import Ledger, Reservation
from tokenbudget_core.reports import build_report
from tokenbudget_core.usage import Usage

NEAR_MIDNIGHT = datetime(2026, 3, 15, 23, 59, 58, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'ledger.db'}"


def _ledger(url: str, tmp_path: Path, **kwargs: object) -> Ledger:
    return Ledger(url, spool_path=tmp_path / "spool.jsonl", **kwargs)  # type: ignore[arg-type]


def test_a_call_filling_a_budget_to_exactly_100_percent_is_refused_past_the_soft_refusal_step(
    url: str, tmp_path: Path
) -> None:
    ledger = _ledger(url, tmp_path, policy=BudgetPolicy(user_daily_tokens=1000))
    with pytest.raises(BudgetExceededError) as e:
        ledger.reserve(model="gpt-4o", input_tokens=990, max_output_tokens=10, user="b")
    assert e.value.step == "soft_refusal"
    # nothing stays held: a call that fits below the refusing shares goes through
    granted = ledger.reserve(model="gpt-4o", input_tokens=800, max_output_tokens=10, user="b")
    assert granted.step == "smaller_context"


def test_without_a_soft_refusal_step_a_budget_can_be_used_to_the_last_token(url: str, tmp_path: Path) -> None:
    policy = BudgetPolicy(user_daily_tokens=1000, ladder=Ladder(cache_only=None, soft_refusal=None))
    ledger = _ledger(url, tmp_path, policy=policy)
    r = ledger.reserve(model="gpt-4o", input_tokens=990, max_output_tokens=10, user="b")
    assert r.step == "smaller_context"  # granted: the ladder's top configured step, never a refusal's
    assert (
        ledger.state(user="b").step == "hard_refusal"
    )  # the budget is now exhausted: the next call is refused
    with pytest.raises(BudgetExceededError):
        ledger.reserve(model="gpt-4o", input_tokens=1, max_output_tokens=0, user="b")


def test_token_counts_from_the_counter_commit_on_every_store(url: str, tmp_path: Path) -> None:
    """``TokenCount`` is an int subclass: reserve, an estimated settle and a Usage built from it
    are stored as plain ints (SQLite used to refuse the commit and lose the usage)."""
    ledger = _ledger(url, tmp_path, policy=BudgetPolicy(daily_usd=Decimal("10")))
    counted = TokenCounter.for_model("gpt-4o").count("How many tokens is this sentence?")
    assert type(counted) is not int
    r = ledger.reserve(model="gpt-4o", input_tokens=counted, max_output_tokens=counted)
    assert type(r.input_tokens) is int
    assert type(r.max_output_tokens) is int
    charge = ledger.settle(r, None, reply_text="Seven.")
    assert charge is not None
    assert charge.applied
    assert charge.usage.estimated
    usage = Usage(input_tokens=counted, output_tokens=counted)
    assert type(usage.input_tokens) is int
    assert ledger.record(usage, model="gpt-4o").applied
    assert build_report(ledger, last_days=1).totals.input_tokens == 2 * int(counted)


@pytest.mark.parametrize(
    ("field", "value"), [("feature", 42), ("user", 1234), ("conversation", b"c"), ("request_id", 7)]
)
def test_ids_of_the_wrong_type_are_named_and_nothing_is_reserved(
    url: str, tmp_path: Path, field: str, value: object
) -> None:
    ledger = _ledger(url, tmp_path, policy=BudgetPolicy(daily_usd=Decimal("1")))
    with pytest.raises(InvalidInputError) as e:
        ledger.reserve(model="gpt-4o", input_tokens=1000, max_output_tokens=100, **{field: value})  # type: ignore[arg-type]
    assert e.value.field == field
    with pytest.raises(InvalidInputError):
        ledger.record(Usage(input_tokens=1), model="gpt-4o", **{field: value})  # type: ignore[arg-type]
    assert ledger.state().headroom["daily_usd"] == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"lease_seconds": float("nan")}, "lease_seconds"), ({"timezone": None}, "timezone")],
)
def test_bad_ledger_options_are_named(tmp_path: Path, kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInputError) as e:
        _ledger("memory://", tmp_path, **kwargs)
    assert e.value.field == field


def test_a_malformed_batch_item_fails_alone(url: str, tmp_path: Path) -> None:
    ledger = _ledger(url, tmp_path, policy=BudgetPolicy(daily_usd=Decimal("1")))
    good = {"model": "gpt-4o", "input_tokens": 10, "max_output_tokens": 10}
    results = ledger.reserve_many(
        [good, {**good, "bogus": 1}, {"model": "gpt-4o"}, "not a mapping", good]  # type: ignore[list-item]
    )
    assert isinstance(results[0], Reservation)
    assert isinstance(results[4], Reservation)
    for i in (1, 2, 3):
        error = results[i]
        assert isinstance(error, InvalidInputError)
        assert error.field == f"calls[{i}]"
    assert "bogus" in str(results[1])
    assert "input_tokens" in str(results[2])


def test_a_record_retried_after_midnight_with_its_time_is_charged_once(url: str, tmp_path: Path) -> None:
    clock = Clock(NEAR_MIDNIGHT)
    ledger = _ledger(url, tmp_path, clock=clock)
    usage = Usage(input_tokens=1000, output_tokens=100)
    happened = clock.now
    first = ledger.record(usage, model="gpt-4o", user="u1", request_id="req-42", at=happened)
    clock.now += 5  # 00:00:03 the next day: the same request, retried with its time
    retry = ledger.record(usage, model="gpt-4o", user="u1", request_id="req-42", at=happened)
    also = ledger.record(
        usage, model="gpt-4o", user="u1", request_id="req-42", at=datetime.fromtimestamp(happened, UTC)
    )
    assert (first.applied, retry.applied, also.applied) == (True, False, False)
    report = build_report(ledger, last_days=2)
    assert report.totals.requests == 1
    assert [d.requests for d in report.per_day] == [1, 0]  # charged to the day it happened


def test_usage_recorded_late_lands_on_the_day_it_was_spent(tmp_path: Path) -> None:
    clock = Clock(NEAR_MIDNIGHT + 3 * 86_400)
    ledger = _ledger("memory://", tmp_path, clock=clock, timezone="America/New_York")
    ledger.record(Usage(input_tokens=10), model="gpt-4o", at=NEAR_MIDNIGHT)  # 19:59 in New York
    (row,) = [d for d in build_report(ledger, last_days=5).per_day if d.requests]
    assert row.day == "2026-03-15"


@pytest.mark.parametrize(
    "at",
    [datetime(2026, 3, 15, 12), "2026-03-15", True, float("inf"), NEAR_MIDNIGHT + 3600],
    ids=["naive", "str", "bool", "inf", "future"],
)
def test_a_bad_record_time_is_named(tmp_path: Path, at: object) -> None:
    ledger = _ledger("memory://", tmp_path, clock=Clock(NEAR_MIDNIGHT))
    with pytest.raises(InvalidInputError) as e:
        ledger.record(Usage(input_tokens=1), model="gpt-4o", at=at)  # type: ignore[arg-type]
    assert e.value.field == "at"
    assert build_report(ledger, last_days=1).totals.requests == 0
    # a few minutes of clock skew are allowed
    assert ledger.record(Usage(input_tokens=1), model="gpt-4o", at=NEAR_MIDNIGHT + 60).applied


def test_calls_naming_no_user_share_the_per_user_budgets_as_one_anonymous_payer(
    url: str, tmp_path: Path
) -> None:
    """Per feature and across features alike: an app that passes no user ids still has a per-user cap
    (on all its anonymous calls together) instead of none."""
    across = _ledger(url, tmp_path, policy=BudgetPolicy(user_daily_tokens=100))
    across.reserve(model="gpt-4o", input_tokens=60, max_output_tokens=0, feature="a")
    with pytest.raises(BudgetExceededError) as e:
        across.reserve(model="gpt-4o", input_tokens=60, max_output_tokens=0, feature="b")
    assert "user=-" in str(e.value)
    assert across.reserve(model="gpt-4o", input_tokens=60, max_output_tokens=0, feature="b", user="u1")
    per_feature = _ledger(
        "memory://", tmp_path, policy=BudgetPolicy(features={"a": FeatureBudget(user_daily_tokens=100)})
    )
    per_feature.reserve(model="gpt-4o", input_tokens=60, max_output_tokens=0, feature="a")
    with pytest.raises(BudgetExceededError):
        per_feature.reserve(model="gpt-4o", input_tokens=60, max_output_tokens=0, feature="a")
