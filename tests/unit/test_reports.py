"""Spend reports, checked against expectations computed here from the calls the test recorded.

Every figure is recomputed independently: costs with ``cost_of`` on the recorded usages, ratios
and percentiles from their definitions, and the same scenario runs on the memory and SQLite stores.
"""

from __future__ import annotations

import calendar
import doctest
import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tokenbudget_core import reports
from tokenbudget_core.attribution import attribute, overhead
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.money import decimal_text
from tokenbudget_core.pricing import PriceTable, cost_of
from tokenbudget_core.registry import ModelRegistry
from tokenbudget_core.reports import Report, build_report
from tokenbudget_core.stores import open_store
from tokenbudget_core.usage import Usage

HALF_NANO = Decimal("5e-10")
NOW = datetime(2026, 11, 20, 15, 30, tzinfo=UTC)


class Clock:
    """A settable fake clock (epoch seconds)."""

    def __init__(self, at: datetime) -> None:
        self.now = at.timestamp()

    def set(self, at: datetime) -> None:
        self.now = at.timestamp()

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Call:
    at: datetime
    model: str
    usage: Usage
    feature: str | None = None
    user: str | None = None
    conversation: str | None = None
    reserve: bool = False
    cache_hit: bool = False
    saved: Decimal | None = None
    overhead: bool = False


def bulk_usage(i: int) -> Usage:
    """20 calls of distinct sizes, so p50 and p95 are different calls."""
    return Usage(input_tokens=100 * (i + 1) + 7 * i * i, output_tokens=10 * ((i * 7) % 20 + 1))


D = datetime
CALLS: tuple[Call, ...] = (
    # Last month: outside every range below and outside the month-to-date.
    Call(at=D(2026, 10, 31, 23, 0, tzinfo=UTC), model="gpt-4o", usage=Usage(input_tokens=9_000), user="old"),
    # 11-17: nothing.
    # 11-18: three users (ids with '/', ':' and non-ASCII), one anonymous call, two conversations.
    Call(
        at=D(2026, 11, 18, 9, tzinfo=UTC),
        model="gpt-4o",
        usage=Usage(input_tokens=1_000, output_tokens=200),
        feature="support",
        user="alice/1",
        conversation="c1",
    ),
    Call(
        at=D(2026, 11, 18, 10, tzinfo=UTC),
        model="gpt-4o-mini",
        usage=Usage(input_tokens=3_000, output_tokens=500, cache_read_tokens=1_000),
        feature="support",
        user="bob:2",
        conversation="c1",  # the same conversation and feature: counted once that day
    ),
    Call(
        at=D(2026, 11, 18, 11, tzinfo=UTC),
        model="gpt-4o",
        usage=Usage(input_tokens=500, output_tokens=50),
        feature="search/ü",
        user="zoë",
        conversation="c1",  # another feature: counted again
        reserve=True,
    ),
    Call(
        at=D(2026, 11, 18, 12, tzinfo=UTC),
        model="gpt-4o-mini",
        usage=Usage(input_tokens=200, output_tokens=20),
        feature="search/ü",
    ),
    # 11-19: only an anonymous call: no active user.
    Call(at=D(2026, 11, 19, 8, tzinfo=UTC), model="gpt-4o", usage=Usage(input_tokens=700, output_tokens=70)),
    # 11-20 (today): cache hit, overhead, an estimate, an unpriced model, 20 bulk calls.
    Call(
        at=D(2026, 11, 20, 9, tzinfo=UTC),
        model="gpt-4o",
        usage=Usage(input_tokens=2_000, output_tokens=400, cache_read_tokens=500),
        feature="support",
        user="alice/1",
        conversation="c9",
        cache_hit=True,
        saved=Decimal("0.0123"),
    ),
    Call(
        at=D(2026, 11, 20, 9, 5, tzinfo=UTC),
        model="gpt-4o-mini",
        usage=Usage(input_tokens=4_000, output_tokens=300),
        feature="support",
        user="alice/1",
        overhead=True,
    ),
    Call(
        at=D(2026, 11, 20, 10, tzinfo=UTC),
        model="claude-sonnet-4-5",
        usage=Usage(input_tokens=1_500, output_tokens=100, cache_write_tokens=1_000, estimated=True),
        feature="support",
        user="carol",
        reserve=True,
    ),
    Call(
        at=D(2026, 11, 20, 11, tzinfo=UTC),
        model="acme-7b",
        usage=Usage(input_tokens=100, output_tokens=10),
        feature="support",
        user="dave",
    ),
    *(
        Call(
            at=D(2026, 11, 20, 12, i, tzinfo=UTC),
            model="gpt-4o-mini",
            usage=bulk_usage(i),
            feature="bulk",
            user=f"u{i % 3}",
        )
        for i in range(20)
    ),
)


def registry() -> ModelRegistry:
    reg = ModelRegistry()
    reg.register("acme-7b", provider="acme", context_window=32_000, max_output_tokens=4_096)
    return reg


PRICES = PriceTable()
REGISTRY = registry()


def cost(call: Call) -> Decimal:
    """The cost of one recorded call: ``cost_of``, and $0 for an unpriced model (flagged unpriced)."""
    if call.model == "acme-7b":
        return Decimal(0)
    return cost_of(call.usage, call.model, registry=REGISTRY, prices=PRICES)


def seed(ledger: Ledger, clock: Clock, calls: tuple[Call, ...] = CALLS) -> None:
    """Record ``calls`` through the public API: record(), reserve()+commit(), attribute(), overhead()."""
    for call in calls:
        clock.set(call.at)
        with attribute(feature=call.feature, user=call.user, conversation=call.conversation):
            if call.overhead:
                with overhead("summariser"):
                    ledger.record(call.usage, model=call.model)
            elif call.reserve:
                r = ledger.reserve(
                    model=call.model, input_tokens=call.usage.input_tokens, max_output_tokens=1_000
                )
                ledger.commit(r, call.usage, cache_hit=call.cache_hit, saved_usd=call.saved)
            else:
                ledger.record(call.usage, model=call.model, cache_hit=call.cache_hit, saved_usd=call.saved)
    # A reservation released after a failed call costs nothing and appears nowhere.
    clock.set(NOW - timedelta(hours=1))
    r = ledger.reserve(model="gpt-4o", input_tokens=50_000, max_output_tokens=1_000, feature="support")
    ledger.release(r)
    clock.set(NOW)


def in_days(days: list[str], tz: str = "UTC") -> list[Call]:
    return [c for c in CALLS if c.at.astimezone(ZoneInfo(tz)).date().isoformat() in days]


def nearest_rank(values: list[Decimal], percent: int) -> Decimal:
    """By definition: the smallest value with at least ``percent`` % of the values at or below it."""
    return min(v for v in values if sum(1 for w in values if w <= v) * 100 >= percent * len(values))


@pytest.fixture(params=["memory", "sqlite"])
def ledger_and_clock(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Ledger, Clock]]:
    clock = Clock(NOW)
    store = open_store("memory://" if request.param == "memory" else "sqlite:///" + str(tmp_path / "t.db"))
    ledger = Ledger(store, clock=clock, registry=REGISTRY, prices=PRICES, spool_path=tmp_path / "spool.jsonl")
    yield ledger, clock
    ledger.close()


@pytest.fixture
def seeded(ledger_and_clock: tuple[Ledger, Clock]) -> Ledger:
    ledger, clock = ledger_and_clock
    seed(ledger, clock)
    return ledger


DAYS = ["2026-11-17", "2026-11-18", "2026-11-19", "2026-11-20"]


def test_totals_match_the_recorded_calls(seeded: Ledger) -> None:
    report = build_report(seeded, last_days=4)
    assert report.days == tuple(DAYS)
    calls = in_days(DAYS)
    t = report.totals
    assert t.requests == len(calls) == 4 + 1 + 4 + 20
    assert t.input_tokens == sum(c.usage.input_tokens for c in calls)
    assert t.output_tokens == sum(c.usage.output_tokens for c in calls)
    assert t.cache_read_tokens == 1_000 + 500
    assert t.cache_write_tokens == 1_000
    assert t.cost_usd == sum(cost(c) for c in calls)
    assert t.cost_usd > 0
    assert t.cache_hits == 1
    assert t.saved_usd == Decimal("0.0123")
    assert t.overhead_usd == cost(next(c for c in calls if c.overhead)) > 0
    assert t.estimated_requests == 1
    assert t.unpriced_requests == 1
    assert t.conversations == 2 + 1  # 11-18: (support, c1), (search/ü, c1); 11-20: (support, c9)
    assert t.active_users == len({"alice/1", "bob:2", "zoë", "carol", "dave", "u0", "u1", "u2"})


def test_per_day_cost_per_active_user(seeded: Ledger) -> None:
    report = build_report(seeded, days=DAYS)
    assert [d.day for d in report.per_day] == DAYS
    for row in report.per_day:
        calls = in_days([row.day])
        day_cost = sum((cost(c) for c in calls), Decimal(0))
        users = {c.user for c in calls if c.user}
        convs = {(c.feature, c.conversation) for c in calls if c.conversation}
        assert row.requests == len(calls)
        assert row.cost_usd == day_cost
        assert row.active_users == len(users)
        assert row.conversations == len(convs)
        assert row.unpriced_requests == sum(c.model == "acme-7b" for c in calls)
        if users:
            assert row.cost_per_active_user_usd is not None
            assert abs(row.cost_per_active_user_usd - day_cost / len(users)) <= HALF_NANO
        else:
            assert row.cost_per_active_user_usd is None
        if convs:
            assert row.cost_per_conversation_usd is not None
            assert abs(row.cost_per_conversation_usd - day_cost / len(convs)) <= HALF_NANO
        else:
            assert row.cost_per_conversation_usd is None
    empty, busy, anonymous_only, today = report.per_day
    assert (empty.requests, empty.cost_usd, empty.cost_per_active_user_usd) == (0, 0, None)
    assert busy.active_users == 3
    assert anonymous_only.cost_usd > 0
    assert anonymous_only.active_users == 0
    assert anonymous_only.cost_per_active_user_usd is None  # unknown, not 0
    assert today.active_users == 3 + 3  # alice, carol, dave + u0..u2


def test_breakdowns_decode_ids_and_rank_by_spend(seeded: Ledger) -> None:
    report = build_report(seeded, day="2026-11-18", top=10)
    calls = in_days(["2026-11-18"])
    for dimension in ("feature", "user", "model"):
        expected: dict[str | None, Decimal] = defaultdict(Decimal)
        requests: dict[str | None, int] = defaultdict(int)
        for c in calls:
            expected[getattr(c, dimension)] += cost(c)
            requests[getattr(c, dimension)] += 1
        b = report.breakdown(dimension)
        assert {r.key: r.cost_usd for r in b.rows} == expected
        assert {r.key: r.requests for r in b.rows} == requests
        assert [r.cost_usd for r in b.rows] == sorted(expected.values(), reverse=True)
        assert b.omitted == 0
    assert {r.key for r in report.breakdown("feature").rows} == {"support", "search/ü"}
    assert {r.key for r in report.breakdown("user").rows} == {"alice/1", "bob:2", "zoë", None}
    inputs = {r.key: r.input_tokens for r in report.breakdown("model").rows}
    assert inputs == {"gpt-4o": 1_500, "gpt-4o-mini": 3_200}


def test_top_users_by_spend(seeded: Ledger) -> None:
    report = build_report(seeded, last_days=4, by=("user",), top=3)
    assert [b.dimension for b in report.breakdowns] == ["user"]
    calls = in_days(DAYS)
    spend: dict[str | None, Decimal] = defaultdict(Decimal)
    for c in calls:
        spend[c.user] += cost(c)
    ranked = sorted(spend.items(), key=lambda kv: kv[1], reverse=True)
    assert len({v for _, v in ranked[:4]}) == 4, "the scenario needs distinct spends to rank"
    b = report.breakdown("user")
    assert [(r.key, r.cost_usd) for r in b.rows] == ranked[:3]
    assert b.omitted == len(ranked) - 3
    assert b.omitted_cost_usd == sum(v for _, v in ranked[3:])
    assert sum(r.cost_usd for r in b.rows) + b.omitted_cost_usd == report.totals.cost_usd
    with pytest.raises(KeyError):
        report.breakdown("model")


def test_call_cost_percentiles_per_feature(seeded: Ledger) -> None:
    report = build_report(seeded, last_days=4)
    stats = {s.feature: s for s in report.call_costs}
    assert set(stats) == {"support", "search/ü", "bulk", None}
    for feature, s in stats.items():
        # An unpriced call gives no cost sample (a $0 sample would pull the percentiles down), nor
        # does an overhead call (a summary is not one of the feature's calls), nor a cache hit.
        costs = [
            cost(c)
            for c in in_days(DAYS)
            if c.feature == feature and c.model != "acme-7b" and not c.overhead and not c.cache_hit
        ]
        assert s.calls == len(costs)
        assert s.p50_usd == nearest_rank(costs, 50)
        assert s.p95_usd == nearest_rank(costs, 95)
    bulk = stats["bulk"]
    assert bulk.calls == 20
    ordered = sorted(cost(Call(at=NOW, model="gpt-4o-mini", usage=bulk_usage(i))) for i in range(20))
    assert (bulk.p50_usd, bulk.p95_usd) == (ordered[9], ordered[18])  # ranks ceil(10) and ceil(19)


def test_projection_of_the_month(seeded: Ledger) -> None:
    p = build_report(seeded, day="2026-11-20").projection
    mtd = sum((cost(c) for c in CALLS if c.at.month == 11), Decimal(0))
    elapsed = (NOW - datetime(2026, 11, 1, tzinfo=UTC)).total_seconds() / 86_400
    assert p.month == "2026-11"
    assert p.days_in_month == calendar.monthrange(2026, 11)[1] == 30
    assert p.month_to_date_usd == mtd
    assert p.month_to_date_usd < sum(cost(c) for c in CALLS)  # October is not in it
    assert p.elapsed_days == Decimal("19.645833")  # 19 days and 15.5 hours
    assert p.projected_usd is not None
    assert abs(p.projected_usd - mtd / Decimal(elapsed) * 30) <= Decimal("1e-8")


def test_projection_at_the_first_instant_of_the_month_is_unknown(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 12, 1, tzinfo=UTC))
    ledger = Ledger("memory://", clock=clock, spool_path=tmp_path / "s.jsonl")
    p = build_report(ledger, last_days=1).projection
    assert (p.month, p.month_to_date_usd, p.elapsed_days, p.projected_usd) == ("2026-12", 0, 0, None)


def test_days_and_month_follow_the_ledgers_time_zone(tmp_path: Path) -> None:
    tz = "America/New_York"
    clock = Clock(NOW)
    ledger = Ledger(
        "memory://",
        clock=clock,
        timezone=tz,
        registry=REGISTRY,
        prices=PRICES,
        spool_path=tmp_path / "spool.jsonl",
    )
    late = Call(  # 2026-12-01 02:00 UTC is still November 30 in New York
        at=D(2026, 12, 1, 2, tzinfo=UTC),
        model="gpt-4o",
        usage=Usage(input_tokens=10_000),
        feature="support",
        user="night-owl",
    )
    seed(ledger, clock, (*CALLS, late))
    clock.set(D(2026, 12, 1, 3, tzinfo=UTC))  # 22:00 on November 30 in New York
    report = build_report(ledger, last_days=2)
    assert report.days == ("2026-11-29", "2026-11-30")
    assert report.timezone == tz
    assert report.per_day[1].cost_usd == cost(late)
    assert report.per_day[1].active_users == 1
    p = report.projection
    assert p.month == "2026-11"
    local = [c for c in (*CALLS, late) if c.at.astimezone(ZoneInfo(tz)).month == 11]
    mtd = sum((cost(c) for c in local), Decimal(0))
    assert p.month_to_date_usd == mtd
    elapsed = (clock.now - datetime(2026, 11, 1, tzinfo=ZoneInfo(tz)).timestamp()) / 86_400
    assert elapsed == pytest.approx(29 + 22 / 24 + 1 / 24)  # the DST change on Nov 1 adds an hour
    month = 30 + 1 / 24  # ... to the month too: its real length in New York
    assert p.projected_usd is not None
    assert abs(p.projected_usd - mtd / Decimal(elapsed) * Decimal(month)) <= Decimal("1e-8")
    # Day buckets: the 11-18 calls at 09:00-12:00 UTC are on the 18th in New York too.
    assert build_report(ledger, day="2026-11-18").totals.cost_usd == sum(
        cost(c) for c in in_days(["2026-11-18"], tz)
    )


def test_a_bare_store_reports_in_utc(seeded: Ledger) -> None:
    report = build_report(seeded.store, days=DAYS)
    assert report.timezone == "UTC"
    assert report.totals.cost_usd == sum(cost(c) for c in in_days(DAYS))


def test_as_dict_is_json_with_money_as_strings(seeded: Ledger) -> None:
    report = build_report(seeded, days=DAYS, by=("user", "feature"), top=2)
    data = json.loads(json.dumps(report.as_dict()))
    assert data["totals"]["cost_usd"] == decimal_text(report.totals.cost_usd)
    assert Decimal(data["totals"]["cost_usd"]) == sum(cost(c) for c in in_days(DAYS))
    assert [b["dimension"] for b in data["breakdowns"]] == ["user", "feature"]
    assert len(data["breakdowns"][0]["rows"]) == 2
    assert data["per_day"][2]["cost_per_active_user_usd"] is None
    per_user = report.per_day[1].cost_per_active_user_usd
    assert per_user is not None
    assert data["per_day"][1]["cost_per_active_user_usd"] == decimal_text(per_user)
    assert data["days"] == DAYS
    assert isinstance(data["projection"]["projected_usd"], str)


def test_report_of_an_empty_ledger(tmp_path: Path) -> None:
    report = build_report(Ledger("memory://", spool_path=tmp_path / "s.jsonl"))
    assert len(report.days) == reports.DEFAULT_LAST_DAYS == 7
    assert (
        report.days[-1] == datetime.now(UTC).date().isoformat()
        or report.days[-1] == (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    )
    assert report.totals.cost_usd == 0
    assert report.call_costs == ()
    assert all(d.cost_per_active_user_usd is None for d in report.per_day)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"day": "2026-11-20", "last_days": 3}, "last_days"),
        ({"days": ["2026-11-20"], "day": "2026-11-20"}, "day"),
        ({"day": "20/11/2026"}, "day"),
        ({"day": datetime(2026, 11, 20, tzinfo=UTC)}, "day"),
        ({"days": []}, "days"),
        ({"days": "2026-11-20"}, "days"),
        ({"last_days": 0}, "last_days"),
        ({"last_days": True}, "last_days"),
        ({"top": 0}, "top"),
        ({"by": ("feature", "team")}, "by"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInputError) as exc:
        build_report(Ledger("memory://"), **kwargs)  # type: ignore[arg-type]
    assert exc.value.field == field


def test_not_a_ledger_or_store() -> None:
    with pytest.raises(InvalidInputError) as exc:
        build_report("memory://")  # type: ignore[arg-type]
    assert exc.value.field == "ledger_or_store"


def test_day_accepts_a_date_and_days_are_sorted_and_unique(seeded: Ledger) -> None:
    assert build_report(seeded, day=date(2026, 11, 18)).days == ("2026-11-18",)
    report = build_report(seeded, days=["2026-11-20", "2026-11-18", "2026-11-20"])
    assert report.days == ("2026-11-18", "2026-11-20")
    assert report.totals.requests == len(in_days(["2026-11-18", "2026-11-20"]))


def test_report_is_frozen(seeded: Ledger) -> None:
    report = build_report(seeded, day="2026-11-18")
    assert isinstance(report, Report)
    with pytest.raises(AttributeError):
        report.days = ()  # type: ignore[misc]


def test_docstring_examples_run() -> None:
    result = doctest.testmod(reports)
    assert result.attempted > 0
    assert result.failed == 0


def test_report_json_writes_small_and_zero_amounts_as_plain_decimals() -> None:
    """One gpt-4o-mini token costs $0.00000015: JSON shows that, never ``1.5E-7`` or ``0E-9``."""
    ledger = Ledger("memory://", clock=lambda: 1_795_000_000.0)
    assert build_report(ledger, last_days=1).as_dict()["projection"]["projected_usd"] in (None, "0")
    ledger.record(Usage(input_tokens=1, output_tokens=0), model="gpt-4o-mini", feature="embed", user="u1")
    ledger.record(
        Usage(requests=1), model="gpt-4o", feature="faq", user="u2", cache_hit=True, saved_usd=Decimal("0.01")
    )
    data = build_report(ledger, last_days=1).as_dict()
    texts: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str):
            texts.append(value)

    walk(data)
    assert not [t for t in texts if "E-" in t or "E+" in t]
    assert data["totals"]["cost_usd"] == "0.00000015"
    assert Decimal(data["totals"]["cost_usd"]) == cost_of(Usage(input_tokens=1), "gpt-4o-mini")


def test_money_docstring_examples_run() -> None:
    from tokenbudget_core import money

    result = doctest.testmod(money)
    assert result.attempted
    assert not result.failed


@pytest.mark.parametrize("by", [None, "feature", 5, b"user"])
def test_by_must_be_a_sequence_of_dimensions(by: object) -> None:
    with pytest.raises(InvalidInputError) as e:
        build_report(Ledger("memory://"), by=by)  # type: ignore[arg-type]
    assert e.value.field == "by"
    assert "by=('feature',)" in str(e.value)


def test_a_breakdown_the_report_lacks_is_invalid_input_and_still_a_key_error() -> None:
    report = build_report(Ledger("memory://"), by=("feature",))
    for missing, fix in (("user", "by=(..., 'user')"), ("team", "feature, user, model")):
        with pytest.raises(InvalidInputError) as e:
            report.breakdown(missing)  # type: ignore[arg-type]
        assert isinstance(e.value, KeyError)
        assert e.value.field == "dimension"
        assert fix in str(e.value)


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_usage_of_several_calls_gives_a_cost_sample_per_call(tmp_path: Path, store: str) -> None:
    url = "memory://" if store == "memory" else f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(url, spool_path=tmp_path / "spool.jsonl")
    batch = Usage(input_tokens=10_000, output_tokens=1_000, requests=10)
    ledger.record(batch, model="gpt-4o", feature="batch")
    one = Usage(input_tokens=1_000, output_tokens=100)
    r = ledger.reserve(model="gpt-4o", input_tokens=1_000, max_output_tokens=100, feature="batch")
    ledger.commit(r, one)
    (stats,) = build_report(ledger, last_days=1).call_costs
    assert stats.calls == 11 == build_report(ledger, last_days=1).totals.requests
    assert stats.p50_usd == stats.p95_usd == cost_of(one, "gpt-4o") == cost_of(batch, "gpt-4o") / 10
    ledger.close()


def test_overhead_calls_are_kept_out_of_a_features_hit_rate_and_cost_per_call() -> None:
    """A support feature whose every user call costs $0.0035 runs one cheap summary per call: its
    per-call figures and hit rate are of its users' calls, the summaries counted apart."""
    ledger = Ledger("memory://")
    for i in range(10):
        with attribute(feature="support", user=f"u{i}"):
            r = ledger.reserve(model="gpt-4o", input_tokens=1_000, max_output_tokens=100)
            ledger.commit(r, Usage(input_tokens=1_000, output_tokens=100))
            if i % 2:  # every other question is answered from a cache
                r = ledger.reserve(model="gpt-4o", input_tokens=1_000, max_output_tokens=100)
                ledger.settle(r, Usage(input_tokens=1_000, output_tokens=100), cache_hit=True)
            with overhead("summariser"):
                r = ledger.reserve(model="gpt-4o-mini", input_tokens=10, max_output_tokens=10)
                ledger.commit(r, Usage(input_tokens=10, output_tokens=10))
    report = build_report(ledger, last_days=1)
    [stats] = report.call_costs
    # its 10 model calls: neither the 5 answers from the cache nor a summary among them
    assert (stats.calls, stats.p50_usd, stats.p95_usd) == (10, Decimal("0.0035"), Decimal("0.0035"))
    [row] = report.breakdown("feature").rows
    assert (row.requests, row.cache_hits) == (25, 5)
    assert row.hit_rate == Decimal("0.3333")  # 5 hits of 15 user requests, not of 25
    assert report.totals.overhead_requests == 10
    assert report.totals.hit_rate == Decimal("0.3333")


@pytest.mark.parametrize("url", ["memory://", "sqlite"])
def test_usage_of_several_calls_counts_as_that_many_in_every_per_call_counter(
    url: str, tmp_path: Path
) -> None:
    """A batch's usage (``requests=n``) is n calls in hits, estimated, unpriced and routed counts
    alike, so rates and "costs are lower bounds" notes stay true for batched recording."""
    store = f"sqlite:///{tmp_path}/r.db" if url == "sqlite" else url
    ledger = Ledger(store, clock=Clock(NOW))
    batch = Usage(input_tokens=40, output_tokens=4, requests=4)
    ledger.record(batch, model="acme-7b", feature="x", unknown_model="unpriced")
    ledger.record(Usage(input_tokens=40, output_tokens=4, requests=3, estimated=True), model="gpt-4o-mini")
    ledger.record(batch, model="gpt-4o-mini", feature="z", premium_model="gpt-4o")
    ledger.record(
        Usage(requests=2), model="gpt-4o-mini", feature="z", cache_hit=True, saved_usd=Decimal("0.01")
    )
    with overhead("summary"):
        ledger.record(Usage(requests=5), model="gpt-4o-mini", feature="z", cache_hit=True)
    t = build_report(ledger, last_days=1).totals
    assert t.requests == 4 + 3 + 4 + 2 + 5
    assert (t.unpriced_requests, t.estimated_requests, t.routed_requests) == (4, 3, 4)
    assert t.cache_hits == 2 + 5
    z = next(row for row in build_report(ledger, last_days=1).breakdown("feature").rows if row.key == "z")
    assert (z.cache_hits, z.routed_requests) == (2 + 5, 4)
    assert t.hit_rate == (Decimal(2) / (4 + 3 + 4 + 2)).quantize(Decimal("1e-4"))  # overhead left out
