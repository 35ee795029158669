"""Edges a user meets after the call went out or while running: an answering model the registry
does not know, a policy reloaded at run time or too large for a store, alerts of shared budgets,
ids a store cannot hold."""

from __future__ import annotations

import contextlib
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from tokenbudget_core import Usage
from tokenbudget_core.alerts import Alert
from tokenbudget_core.attribution import attribute, overhead
from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget
from tokenbudget_core.errors import BudgetExceededError, InvalidInputError, UnknownModelError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report

pytestmark = pytest.mark.usefixtures("isolated")

POLICY = BudgetPolicy(features={"chat": FeatureBudget(user_daily_usd="0.01")})
CALL = {"model": "gpt-4o", "input_tokens": 2_000, "max_output_tokens": 300, "feature": "chat", "user": "u"}


def test_an_unknown_answering_model_releases_the_reservation_before_the_error() -> None:
    ledger = Ledger("memory://", policy=POLICY)
    r = ledger.reserve(**CALL)  # holds $0.008 of the user's $0.01
    with pytest.raises(UnknownModelError) as e:
        ledger.settle(r, Usage(input_tokens=2_000, output_tokens=50), model="gpt-4o-2031-01-01")
    assert "gpt-4o-2031-01-01" in str(e.value)
    assert ledger.state(feature="chat", user="u").headroom["user_daily_usd"] == Decimal("0.01")
    ledger.reserve(**CALL)  # the user is not locked out by the failed commit


def test_unknown_model_unpriced_charges_the_tokens_with_no_cost() -> None:
    ledger = Ledger("memory://", policy=BudgetPolicy(user_daily_tokens=10_000))
    r = ledger.reserve(model="gpt-4o", input_tokens=2_000, max_output_tokens=300, user="u")
    charge = ledger.commit(
        r, Usage(input_tokens=2_000, output_tokens=50), model="acme-7b", unknown_model="unpriced"
    )
    assert charge.applied
    assert charge.cost_usd is None
    totals = build_report(ledger, last_days=1).totals
    assert (totals.requests, totals.unpriced_requests, totals.input_tokens) == (1, 1, 2_000)
    assert ledger.state(user="u").headroom["user_daily_tokens (all features)"] == 10_000 - 2_050
    many = ledger.commit_many(
        [(ledger.reserve(model="gpt-4o", input_tokens=1, max_output_tokens=1, user="u"),
          Usage(input_tokens=1, output_tokens=1), {"model": "acme-7b", "unknown_model": "unpriced"})]
    )  # fmt: skip
    assert many[0].applied  # type: ignore[union-attr]
    with pytest.raises(InvalidInputError) as bad:
        ledger.commit(r, Usage(input_tokens=1), unknown_model="guess")  # type: ignore[arg-type]
    assert bad.value.field == "unknown_model"


@pytest.mark.parametrize(
    ("setting", "value"),
    [("daily_usd", "10000000"), ("user_daily_usd", Decimal("9007200")), ("user_daily_tokens", 2**53)],
)
def test_a_limit_no_store_can_hold_is_refused_by_the_policy(setting: str, value: object) -> None:
    with pytest.raises(InvalidInputError) as e:
        BudgetPolicy(**{setting: value})  # type: ignore[arg-type]
    assert e.value.field == setting
    BudgetPolicy(daily_usd="9000000", user_daily_tokens=2**53 - 1)  # just under: fine


def test_a_reassigned_policy_applies_to_the_next_call() -> None:
    ledger = Ledger("memory://", policy=BudgetPolicy(daily_usd="1"))
    ledger.commit(ledger.reserve(**CALL), Usage(input_tokens=1_000, output_tokens=100))  # $0.0035
    ledger.policy = BudgetPolicy(daily_usd="0.001")
    assert ledger.state().step == "hard_refusal"
    with pytest.raises(BudgetExceededError) as e:
        ledger.reserve(**CALL)
    assert e.value.budget == "daily_usd"
    with pytest.raises(BudgetExceededError):
        ledger.check(**CALL)  # the checker follows the new policy too
    with pytest.raises(InvalidInputError) as bad:
        ledger.policy = {"daily_usd": "1"}  # type: ignore[assignment]
    assert bad.value.field == "policy"


def test_alerts_of_shared_budgets_name_the_budgets_scope_not_the_user_who_crossed_it() -> None:
    alerts: list[Alert] = []
    policy = BudgetPolicy(
        daily_usd="0.05",
        user_daily_usd="0.05",
        features={"support": FeatureBudget(feature_daily_usd="0.05", user_daily_usd="0.05")},
    )
    ledger = Ledger("memory://", alerts=[alerts.append], policy=policy)
    for _ in range(12):
        r = ledger.reserve(
            model="gpt-4o", input_tokens=1_000, max_output_tokens=100, feature="support", user="u-7"
        )
        ledger.commit(r, Usage(input_tokens=1_000, output_tokens=100))
    scopes = {a.budget: a.scope for a in alerts}
    assert scopes == {
        "daily_usd": "all calls",
        "feature_daily_usd": "feature=support",
        "user_daily_usd (all features)": "user=u-7 (all features)",
        "user_daily_usd": "feature=support user=u-7",
    }


@pytest.mark.parametrize("field", ["feature", "user", "conversation", "request_id"])
def test_ids_utf8_cannot_encode_are_named_errors_before_the_call(field: str) -> None:
    ledger = Ledger("memory://")
    with pytest.raises(InvalidInputError) as e:
        ledger.reserve(model="gpt-4o", input_tokens=1, max_output_tokens=1, **{field: "id-\udc80"})
    assert e.value.field == field
    if field != "request_id":
        with pytest.raises(InvalidInputError) as e, attribute(**{field: "id-\udc80"}):
            pass
        assert e.value.field == field
    ledger.reserve(model="gpt-4o", input_tokens=1, max_output_tokens=1, **{field: "id-é-✓"})  # fine


def test_input_tokens_none_is_a_named_error() -> None:
    ledger = Ledger("memory://")
    with pytest.raises(InvalidInputError) as e:
        ledger.reserve(model="gpt-4o", input_tokens=None, max_output_tokens=1)  # type: ignore[arg-type]
    assert e.value.field == "input_tokens"
    [error] = ledger.reserve_many([{"model": "gpt-4o", "input_tokens": None}])
    assert isinstance(error, InvalidInputError)
    assert error.field == "input_tokens"


@pytest.mark.parametrize("bad", ["", None, 7, "id-\udc80"])
def test_abandon_names_a_bad_request_id(bad: object) -> None:
    with pytest.raises(InvalidInputError) as e:
        Ledger("memory://").abandon(bad)  # type: ignore[arg-type]
    assert e.value.field == "request_id"


def test_a_retry_under_an_abandoned_id_keeps_its_reservation() -> None:
    """abandon() queues the id's release for when the store answers; a reserve under that id in
    the meantime is the caller retrying: the release must not take its reservation away."""
    ledger = Ledger("memory://", policy=BudgetPolicy(daily_usd="0.01"))
    ledger.abandon("call-1")
    held = ledger.reserve(model="gpt-4o", input_tokens=1_000, max_output_tokens=500, request_id="call-1")
    ledger.state()  # a store call: where waiting releases run (at most once a second)
    time.sleep(1.05)
    ledger.state()
    assert ledger.state().headroom["daily_usd"] == Decimal("0.01") - held.reserved_usd  # type: ignore[operator]
    with pytest.raises(BudgetExceededError):
        ledger.reserve(model="gpt-4o", input_tokens=1_000, max_output_tokens=500)  # 0.0075 + 0.0075 > 0.01


def test_a_policy_assigned_while_a_call_works_out_its_limits_is_not_undone() -> None:
    """A reserve that read the old policy caches what it worked out with the old policy's caches,
    never in the new one's: the reloaded limits hold from the next call on."""
    entered, go = threading.Event(), threading.Event()
    calls: list[str | None] = []

    class SlowPolicy(BudgetPolicy):
        def feature(self, name: str | None) -> FeatureBudget:
            calls.append(name)
            if len(calls) == 2:  # the call working out the limits (the first reads per-call limits)
                entered.set()
                go.wait(5)
            return super().feature(name)

    ledger = Ledger("memory://", policy=SlowPolicy())  # no limits

    def reserve() -> None:
        with contextlib.suppress(BudgetExceededError):  # refused or not: either policy may judge it
            ledger.reserve(model="gpt-4o", input_tokens=1, max_output_tokens=1)

    worker = threading.Thread(target=reserve)
    worker.start()
    assert entered.wait(5)
    ledger.policy = BudgetPolicy(daily_usd="0.000001")
    go.set()
    worker.join()
    with pytest.raises(BudgetExceededError):
        ledger.reserve(model="gpt-4o", input_tokens=100_000, max_output_tokens=1_000)


def test_check_says_when_nothing_could_be_checked(tmp_path: Path) -> None:
    ledger = Ledger(
        "redis://127.0.0.1:1/0", on_unavailable="open", policy=BudgetPolicy(daily_usd="1"),
        spool_path=tmp_path / "spool.jsonl",
    )  # fmt: skip
    checked = ledger.check(model="gpt-4o", input_tokens=10, max_output_tokens=10)
    assert checked.unchecked
    assert not Ledger("memory://").check(model="gpt-4o", input_tokens=10, max_output_tokens=10).unchecked


def test_overhead_cache_hits_stay_out_of_the_hit_rate() -> None:
    ledger = Ledger("memory://")
    with attribute(feature="chat", user="u"):
        for hit in (False, True):  # the user's two calls, one answered by a cache
            r = ledger.reserve(model="gpt-4o", input_tokens=100, max_output_tokens=10)
            ledger.settle(r, Usage(input_tokens=100, output_tokens=10), cache_hit=hit)
        with overhead("summariser"):
            for _ in range(2):  # two summaries, both from a cache
                r = ledger.reserve(model="gpt-4o-mini", input_tokens=10, max_output_tokens=10)
                ledger.settle(r, Usage(input_tokens=10, output_tokens=10), cache_hit=True)
    assert build_report(ledger, last_days=1).totals.hit_rate == Decimal("0.5")


def test_an_abandoned_id_is_released_by_later_calls_on_the_memory_lane() -> None:
    """A reservation under an abandoned id is given back by the next calls a second later, the
    memory store's one-pass reserve and commit included (they are the only calls a busy app makes)."""
    ledger = Ledger("memory://", policy=BudgetPolicy(daily_usd="0.01"))
    held = ledger.reserve(model="gpt-4o", input_tokens=1_000, max_output_tokens=500, request_id="call-1")
    ledger.abandon("call-1")
    time.sleep(1.05)
    r = ledger.reserve(model="gpt-4o", input_tokens=10, max_output_tokens=10)
    charge = ledger.commit(r, Usage(input_tokens=10, output_tokens=10))
    assert held.reserved_usd is not None
    assert held.reserved_usd > 0
    assert charge.cost_usd is not None
    # only the committed call is left: the abandoned reservation was given back
    assert ledger.state().headroom["daily_usd"] == Decimal("0.01") - charge.cost_usd


@pytest.mark.parametrize("store", ["memory", "sqlite"])
@pytest.mark.parametrize("limit", ["top", "feature"])
def test_a_per_user_limit_set_later_in_the_day_counts_the_days_earlier_spend(
    store: str, limit: str, tmp_path: Path
) -> None:
    """A policy reloaded mid-day with a per-user limit, across all features or in one, sees
    what the user spent before it: the user cannot go past the limit by the earlier spend."""
    ledger = Ledger("memory://" if store == "memory" else f"sqlite:///{tmp_path}/l.db")
    ledger.record(Usage(input_tokens=1_000), model="gpt-4o", feature="chat", user="b")
    ledger.policy = (
        BudgetPolicy(user_daily_tokens=1_500)
        if limit == "top"
        else BudgetPolicy(features={"chat": FeatureBudget(user_daily_tokens=1_500)})
    )
    (share,) = ledger.state(feature="chat", user="b").shares.values()
    assert share == pytest.approx(1_000 / 1_500)
    with pytest.raises(BudgetExceededError):
        ledger.reserve(model="gpt-4o", input_tokens=1_000, max_output_tokens=0, feature="chat", user="b")
    ledger.reserve(model="gpt-4o", input_tokens=300, max_output_tokens=0, feature="chat", user="b")


def test_settle_charges_the_estimate_when_the_reported_figures_cannot_be_stored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A provider's absurd report (beyond what a ledger stores) after the call went out is logged
    and the call is charged its flagged estimate, not left holding its worst case."""
    ledger = Ledger("memory://", policy=BudgetPolicy(user_daily_tokens=1_000))
    r = ledger.reserve(model="gpt-4o", input_tokens=10, max_output_tokens=50, user="u")
    with caplog.at_level("WARNING", logger="tokenbudget.ledger"):
        charge = ledger.settle(r, Usage(input_tokens=10**20), reply_text="It is sunny.", counter="gpt-4o")
    assert charge is not None
    assert charge.usage.estimated
    assert charge.usage.input_tokens == 10
    assert charge.usage.output_tokens > 0
    assert "cannot be charged" in caplog.text
    assert (
        ledger.state(user="u").headroom["user_daily_tokens (all features)"]
        == 1_000 - 10 - charge.usage.output_tokens
    )
    with pytest.raises(InvalidInputError):  # not a Usage at all: the caller's mistake, raised
        ledger.settle(ledger.reserve(model="gpt-4o", input_tokens=1, max_output_tokens=1), "12 tokens")  # type: ignore[arg-type]


def test_a_cache_hit_whose_reported_usage_cannot_be_priced_records_the_hit_without_a_saving() -> None:
    """A cached reply carrying absurd usage: the hit is recorded (no saving claimed) and the
    reservation is not left held."""
    ledger = Ledger("memory://", policy=BudgetPolicy(daily_usd="1"))
    r = ledger.reserve(model="gpt-4o", input_tokens=100, max_output_tokens=50)
    charge = ledger.settle(r, Usage(input_tokens=10**15), cache_hit=True)
    assert charge is not None
    assert charge.cost_usd == 0
    report = build_report(ledger, last_days=1).totals
    assert (report.cache_hits, report.saved_usd) == (1, Decimal(0))
    assert ledger.state().headroom["daily_usd"] == Decimal(1)


@pytest.mark.parametrize("path", ["lane", "general"])
def test_a_call_filling_a_budget_exactly_without_a_soft_refusal_is_granted_at_the_top_step(path: str) -> None:
    """With no refusing step configured (neither cache-only nor soft refusal), the call that
    fills a budget to exactly 100% goes out: its step is the ladder's top configured one, never
    ``hard_refusal`` (an app refusing on that step would drop a call it holds); ``check()``
    agrees; the next call is refused."""
    from tokenbudget_core.budgets import Ladder
    from tokenbudget_core.stores.memory import MemoryStore

    class General(MemoryStore):
        """No lane."""

    ladder = Ladder(cheaper_tier=0.5, smaller_context=0.6, cache_only=None, soft_refusal=None)
    store = MemoryStore() if path == "lane" else General()
    ledger = Ledger(store, policy=BudgetPolicy(user_daily_tokens=1_000, ladder=ladder), alerts=[])
    ledger.record(Usage(input_tokens=900), model="gpt-4o", user="u")
    call = {"model": "gpt-4o", "input_tokens": 100, "max_output_tokens": 0, "user": "u"}
    assert ledger.check(**call).step == "smaller_context"
    assert ledger.reserve(**call).step == "smaller_context"
    with pytest.raises(BudgetExceededError):
        ledger.reserve(**{**call, "input_tokens": 1})


@pytest.mark.parametrize("path", ["lane", "general"])
def test_with_cache_only_and_no_soft_refusal_a_call_past_it_is_refused_as_cache_only(path: str) -> None:
    """Cache-only is a refusing step: with no soft refusal configured, a call taking the budget
    past its share, or filling it exactly, is refused with ``step == "cache_only"`` (only a cache
    may answer it), by ``check()`` and ``reserve()`` alike, and holds nothing."""
    from tokenbudget_core.budgets import Ladder
    from tokenbudget_core.stores.memory import MemoryStore

    class General(MemoryStore):
        """No lane."""

    ladder = Ladder(cheaper_tier=0.5, smaller_context=0.6, cache_only=0.8, soft_refusal=None)
    store = MemoryStore() if path == "lane" else General()
    ledger = Ledger(store, policy=BudgetPolicy(user_daily_tokens=1_000, ladder=ladder), alerts=[])
    ledger.record(Usage(input_tokens=700), model="gpt-4o", user="u")
    for tokens in (150, 300):  # to 85%, and to exactly 100%
        call = {"model": "gpt-4o", "input_tokens": tokens, "max_output_tokens": 0, "user": "u"}
        for ask in (ledger.check, ledger.reserve):
            with pytest.raises(BudgetExceededError) as refused:
                ask(**call)
            assert refused.value.step == "cache_only"
    assert ledger.state(user="u").used == {"user_daily_tokens (all features)": 700}
    granted = ledger.reserve(model="gpt-4o", input_tokens=50, max_output_tokens=0, user="u")
    assert granted.step == "smaller_context"
