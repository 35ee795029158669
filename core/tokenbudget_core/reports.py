"""Spend reports from the ledger's attribution counters: who spent what, per day, and where it is going.

:func:`build_report` reads a store's rollup rows (day x feature x user x model, see
:mod:`tokenbudget_core.stores.base`) and its per-call cost samples, and returns a
:class:`Report`: totals, spend by feature / user / model, one row per day with the headline
metric **cost per active user per day**, p50/p95 cost per call per feature, and a projection
of the month's spend. Money is ``Decimal`` USD; a ratio that cannot be computed (no active
user, no conversation, no elapsed time) is ``None``, never ``0``.

Definitions:

* *active users* of a day: distinct non-empty user ids with at least one request that day;
  *cost per active user per day* = the day's total cost (calls without a user included) /
  that day's active users.
* *conversations* are counted once per day and feature (a conversation that spans two days or
  two features counts twice); *cost per conversation* = the day's total cost / its conversations.
* *hit rate* of a feature (user, model) = its requests answered from a response cache / its
  requests (a served cache hit is recorded as a request costing $0 with what it saved).
* *p50 / p95*: nearest-rank percentiles over the recorded cost of every call of a feature in
  the report's days (exact, worked out holding at most about 262,144 of them at a time: see
  :mod:`tokenbudget_core.percentiles`). Usage of several calls (``Usage(requests=n)``) counts
  as ``n`` calls of its average cost (for ``n`` over 1,000, as 1,000 of them); unpriced calls
  have no cost, and cache hits and tokenbudget's own overhead calls are not calls of the
  feature (no sample).
* *projected month-end spend* = month-to-date spend * the month's length / the time elapsed
  since local midnight on the 1st, where the month is the current one by the ledger's clock and
  time zone and its length is its real one in that zone (local midnight on the 1st of the next
  month minus local midnight on the 1st, in seconds: a month with a DST change is an hour
  longer or shorter than its days * 86,400 s). So the projection is never below the
  month-to-date spend and meets it at the month's end. *Elapsed days* = that elapsed share of
  the month * its days, so the projection is also month-to-date / elapsed days * days in the
  month. A month is not projected before its first local day has fully elapsed
  (:data:`MIN_PROJECTION_DAYS`): a few minutes' spend scaled to a month is noise ($1 in the
  first second would project $2.7M), so until then ``projected_usd`` is ``None`` and
  :class:`Projection` says why and from when.
* *routing saved* = over the routed calls (those committed with a ``premium_model``), their
  actual usage priced on the premium tier's model minus what they cost: the money tiered routing
  saved, net (a call that cost more than the premium model would have counts negative). Calls
  where either price is unknown add nothing; data written before routing was recorded reads as
  0 routed requests.
* Unpriced calls (a model without a known price) are charged $0 by the ledger, so every cost is
  a lower bound when ``unpriced_requests`` is not 0: the totals, each breakdown row
  (:attr:`SpendRow.unpriced_requests`), each day (:attr:`DayRow.unpriced_requests`) and the
  month (:attr:`Projection.unpriced_requests`) say how many calls their cost leaves out, and a
  day whose calls were all unpriced has no cost per active user or per conversation (``None``:
  unknown, never $0).
"""

from __future__ import annotations

import calendar
import functools
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any, Literal, NamedTuple, TypeAlias, cast
from urllib.parse import quote, unquote

from .errors import InvalidInputError
from .ledger import Ledger, clock_out_of_range
from .money import jsonable
from .money import nanos_to_usd as _usd
from .percentiles import DEFAULT_BUDGET, nearest_ranks
from .stores.base import CallCostSnapshot, CostPair, LedgerStore, RollupRow, snapshot_call_costs

__all__ = [
    "Breakdown",
    "CallCostStats",
    "DayRow",
    "Dimension",
    "Projection",
    "Report",
    "SpendRow",
    "Totals",
    "build_report",
]

Dimension: TypeAlias = Literal["feature", "user", "model"]
DIMENSIONS: tuple[Dimension, ...] = ("feature", "user", "model")
DEFAULT_LAST_DAYS = 7
"""Days covered when no range is given: the week ending today."""
_NANO_USD = Decimal("1e-9")


@dataclass(frozen=True, kw_only=True, slots=True)
class Totals:
    """Everything in the report's days, summed."""

    requests: int
    input_tokens: int
    """All input tokens, cache reads and writes included."""
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: Decimal
    cache_hits: int
    """Calls answered from an application cache."""
    saved_usd: Decimal
    """What the cache hits saved."""
    overhead_usd: Decimal
    """Spend on tokenbudget's own calls (summaries, routing), already part of ``cost_usd``."""
    estimated_requests: int
    """Calls whose usage was estimated (e.g. a stream cut short)."""
    unpriced_requests: int
    """Calls of models without a known price (charged $0: costs are lower bounds)."""
    conversations: int
    """Conversations, once per day and feature."""
    active_users: int
    """Distinct non-empty users with requests in the report's days."""
    routed_requests: int = 0
    """Calls a tier router sent (committed with their premium model)."""
    routing_saved_usd: Decimal = Decimal(0)
    """Routed calls' usage priced on their premium model minus their cost (net, see the module)."""
    hit_rate: Decimal | None = None
    """``cache_hits`` per request of the users' own (``None`` without any): tokenbudget's own
    calls are left out of the denominator, as no cache could have answered them."""
    overhead_requests: int = 0
    """tokenbudget's own calls (summaries, classifiers, embeddings), part of ``requests``."""
    overhead_cache_hits: int = 0
    """Those of tokenbudget's own calls answered from a cache, part of ``cache_hits`` (so
    ``hit_rate`` = (``cache_hits`` - this) / (``requests`` - ``overhead_requests``))."""


@dataclass(frozen=True, kw_only=True, slots=True)
class SpendRow:
    """Spend of one feature, user or model."""

    key: str | None
    """The decoded id (``None``: calls made without one)."""
    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    cache_hits: int = 0
    """Requests answered from a response cache."""
    saved_usd: Decimal = Decimal(0)
    """What those cache hits saved."""
    hit_rate: Decimal | None = None
    """``cache_hits`` per request of the users' own (``None`` without any; see :class:`Totals`)."""
    routed_requests: int = 0
    """Calls a tier router sent."""
    routing_saved_usd: Decimal = Decimal(0)
    """What routing saved on them against their premium model (net)."""
    unpriced_requests: int = 0
    """Of ``requests``, the calls of models without a known price: ``cost_usd`` leaves them out
    (it is a lower bound when this is not 0; a row of an unpriced model shows $0 and all its
    calls here, never a free model)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Breakdown:
    """Spend by one dimension, most expensive first, cut to the top N."""

    dimension: Dimension
    rows: tuple[SpendRow, ...]
    omitted: int
    """How many further keys were cut by ``top``."""
    omitted_cost_usd: Decimal
    """Their spend, so the rows plus this add up to the total."""
    omitted_unpriced_requests: int = 0
    """Their calls of models without a known price, which ``omitted_cost_usd`` leaves out."""


@dataclass(frozen=True, kw_only=True, slots=True)
class DayRow:
    """One day of the report."""

    day: str
    requests: int
    cost_usd: Decimal
    active_users: int
    cost_per_active_user_usd: Decimal | None
    """The headline metric: ``cost_usd / active_users`` (``None`` when nobody was active, or
    when every call of the day was unpriced: its cost is unknown, not $0)."""
    conversations: int
    cost_per_conversation_usd: Decimal | None
    """``cost_usd / conversations`` (``None`` without conversations, or when every call of the
    day was unpriced)."""
    unpriced_requests: int
    """Of ``requests``, the calls of models without a known price: ``cost_usd`` (and the ratios)
    leave them out."""


@dataclass(frozen=True, kw_only=True, slots=True)
class CallCostStats:
    """Cost per call of one feature over the report's days (nearest-rank percentiles)."""

    feature: str | None
    calls: int
    """Priced model calls with a cost sample (cache hits and overhead calls are not counted; see
    the module docstring)."""
    p50_usd: Decimal | None
    p95_usd: Decimal | None


@dataclass(frozen=True, kw_only=True, slots=True)
class Projection:
    """Where this month's spend is heading at its current pace."""

    month: str
    """``YYYY-MM`` in the ledger's time zone."""
    month_to_date_usd: Decimal
    elapsed_days: Decimal
    """The month's elapsed share (of its real length in the time zone) * its days, rounded to
    1e-6 for display: at most ``days_in_month``."""
    days_in_month: int
    projected_usd: Decimal | None
    """``month_to_date_usd`` * the month's length / its elapsed time (see the module): never below
    ``month_to_date_usd``; ``None`` before :data:`MIN_PROJECTION_DAYS` local days of the month have
    elapsed (then ``reason`` says so)."""
    available_from: str = ""
    """ISO timestamp (in the time zone) from which the month is projected: local midnight after its
    first :data:`MIN_PROJECTION_DAYS` days."""
    reason: str | None = None
    """Why ``projected_usd`` is ``None`` (``None`` when it is not)."""
    unpriced_requests: int = 0
    """The month's calls so far of models without a known price: ``month_to_date_usd`` and
    ``projected_usd`` leave them out (lower bounds when this is not 0)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Report:
    """A spend report; :meth:`as_dict` gives it as JSON-safe data (money as strings).

    Example:
        >>> from tokenbudget_core.ledger import Ledger
        >>> report = build_report(Ledger("memory://"), last_days=1)
        >>> report.totals.cost_usd, report.per_day[0].cost_per_active_user_usd
        (Decimal('0'), None)
    """

    days: tuple[str, ...]
    timezone: str
    generated_at: str
    """ISO timestamp of the report in the ledger's time zone."""
    totals: Totals
    breakdowns: tuple[Breakdown, ...]
    per_day: tuple[DayRow, ...]
    call_costs: tuple[CallCostStats, ...]
    projection: Projection

    def breakdown(self, dimension: Dimension) -> Breakdown:
        """The spend by ``dimension``.

        Raises:
            InvalidInputError: ``dimension`` is not one of the report's (built without it in
                ``by``, or unknown); it is also a ``KeyError``, as it always was.
        """
        for b in self.breakdowns:
            if b.dimension == dimension:
                return b
        built = [b.dimension for b in self.breakdowns]
        raise _NoBreakdownError(
            "dimension",
            f"this report has no breakdown by {dimension!r} (it has: {', '.join(built) or 'none'})",
            value=dimension,
            fix=f"build the report with by=(..., {dimension!r})"
            if dimension in DIMENSIONS
            else f"use one of {', '.join(DIMENSIONS)}",
        )

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-safe data: ``Decimal`` as strings, tuples as lists."""
        return cast(dict[str, Any], jsonable(asdict(self)))


class _Row(NamedTuple):
    """A rollup row with its ids decoded (``None``: no id)."""

    day: str
    feature: str | None
    user: str | None
    model: str | None
    values: Mapping[str, int]


@functools.lru_cache(maxsize=65_536)
def _ids(rollup_key: str) -> tuple[str | None, str | None, str | None]:
    """The decoded ``feature, user, model`` of a rollup key (cached: every day repeats them)."""
    parts = rollup_key.split("/")
    if len(parts) != 3:
        raise InvalidInputError("rollup_key", "expected '<feature>/<user>/<model>'", value=rollup_key)
    f, u, m = (unquote(p) if p else None for p in parts)
    return f, u, m


def _decode(row: RollupRow) -> _Row:
    return _Row(row.day, *_ids(row.rollup_key), row.values)


def _sums(rows: Iterable[_Row]) -> Counter[str]:
    total: Counter[str] = Counter()
    get = total.get
    for r in rows:  # (Counter.update per row checks its argument each time: a report sums ~1e5 rows)
        for name, value in r.values.items():
            total[name] = get(name, 0) + value
    return total


def _hit_rate(c: Counter[str]) -> Decimal | None:
    """Cache hits per request of the users' own: tokenbudget's own calls (and their cache hits)
    left out of both sides."""
    return _rate(c["cache_hits"] - c["overhead_cache_hits"], c["requests"] - c["overhead_requests"])


def _active_users(rows: Iterable[_Row]) -> int:
    return len({r.user for r in rows if r.user and r.values.get("requests", 0) > 0})


def _ratio(numerator: Decimal, denominator: int) -> Decimal | None:
    """``numerator / denominator`` to the nano-USD, or ``None`` when the denominator is 0."""
    return (numerator / denominator).quantize(_NANO_USD) if denominator else None


def _rate(part: int, whole: int) -> Decimal | None:
    return None if whole <= 0 else (Decimal(part) / whole).quantize(Decimal("1e-4"))


def _parse_day(value: object, where: str) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise InvalidInputError(
        where, "must be an ISO date like 2026-11-23", value=value, fix="give the day as YYYY-MM-DD"
    )


def _source(source: Ledger | LedgerStore) -> tuple[LedgerStore, Callable[[], float], tzinfo, str]:
    if isinstance(source, Ledger):
        source.catch_up()  # usage spooled during an outage is in the report once the store is back
        return source.store, source.clock, source.tz, source.tz.key
    if isinstance(source, LedgerStore):
        return source, time.time, UTC, "UTC"
    raise InvalidInputError("ledger_or_store", "must be a Ledger or a store", value=source)


MAX_LAST_DAYS = 3_660
"""The longest ``last_days`` span: ten years of days."""


def _select_days(
    days: Sequence[str] | None, day: str | date | None, last_days: int | None, today: date
) -> list[str]:
    given = [name for name, v in (("days", days), ("day", day), ("last_days", last_days)) if v is not None]
    if len(given) > 1:
        raise InvalidInputError(given[1], f"give only one of days, day and last_days (got {given})")
    if day is not None:
        return [_parse_day(day, "day").isoformat()]
    if days is not None:
        # An iterable of days, not a string, and not empty (a number or a bool is refused too).
        iterable = isinstance(days, Iterable) and not isinstance(days, str)
        selected = sorted({_parse_day(d, "days").isoformat() for d in days}) if iterable else []
        if not selected:
            raise InvalidInputError(
                "days",
                "must be a non-empty list of ISO dates",
                value=days,
                fix="pass e.g. days=['2026-11-23']",
            )
        return selected
    n = DEFAULT_LAST_DAYS if last_days is None else last_days
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidInputError("last_days", "must be a positive integer", value=last_days)
    if n > MAX_LAST_DAYS:
        raise InvalidInputError(
            "last_days",
            f"must be at most {MAX_LAST_DAYS:,} (ten years), got {n:,}",
            value=last_days,
            fix="report a shorter span, or pass days=[...] with the days you want",
        )
    try:
        return [(today - timedelta(days=i)).isoformat() for i in range(n - 1, -1, -1)]
    except OverflowError as e:  # only a clock set near year 1 gets here
        raise InvalidInputError(
            "last_days", f"{n:,} days before {today} is before year 1", value=last_days
        ) from e


def _totals(rows: Sequence[_Row]) -> Totals:
    c = _sums(rows)
    return Totals(
        requests=c["requests"],
        input_tokens=c["input_tokens"],
        output_tokens=c["output_tokens"],
        cache_read_tokens=c["cache_read_tokens"],
        cache_write_tokens=c["cache_write_tokens"],
        cost_usd=_usd(c["cost_nanos"]),
        cache_hits=c["cache_hits"],
        saved_usd=_usd(c["saved_nanos"]),
        overhead_usd=_usd(c["overhead_nanos"]),
        estimated_requests=c["estimated"],
        unpriced_requests=c["unpriced"],
        conversations=c["conversations"],
        active_users=_active_users(rows),
        routed_requests=c["routed_requests"],
        routing_saved_usd=_usd(c["routing_saved_nanos"]),
        hit_rate=_hit_rate(c),
        overhead_requests=c["overhead_requests"],
        overhead_cache_hits=c["overhead_cache_hits"],
    )


def _breakdown(rows: Sequence[_Row], dimension: Dimension, top: int) -> Breakdown:
    groups: dict[str | None, list[_Row]] = defaultdict(list)
    for r in rows:
        groups[getattr(r, dimension)].append(r)
    spend = []
    for key, group in groups.items():
        c = _sums(group)
        spend.append(
            SpendRow(
                key=key,
                requests=c["requests"],
                input_tokens=c["input_tokens"],
                output_tokens=c["output_tokens"],
                cost_usd=_usd(c["cost_nanos"]),
                cache_hits=c["cache_hits"],
                saved_usd=_usd(c["saved_nanos"]),
                hit_rate=_hit_rate(c),
                routed_requests=c["routed_requests"],
                routing_saved_usd=_usd(c["routing_saved_nanos"]),
                unpriced_requests=c["unpriced"],
            )
        )
    spend.sort(key=lambda s: (-s.cost_usd, -s.requests, s.key is None, s.key or ""))
    cut = spend[top:]
    omitted_cost = sum((s.cost_usd for s in cut), Decimal(0))
    return Breakdown(
        dimension=dimension,
        rows=tuple(spend[:top]),
        omitted=len(cut),
        omitted_cost_usd=omitted_cost,
        omitted_unpriced_requests=sum(s.unpriced_requests for s in cut),
    )


def _day_row(day: str, rows: Sequence[_Row]) -> DayRow:
    c = _sums(rows)
    cost, users = _usd(c["cost_nanos"]), _active_users(rows)
    # Unknown when the day's model calls were all unpriced. A cache hit is no model call (it costs
    # $0 whatever its model's price), so hits make no cost known: a row's calls that were neither
    # hits nor unpriced were priced model calls.
    known = (
        not c["unpriced"]
        or c["cost_nanos"] > 0
        or any(
            r.values.get("requests", 0) - r.values.get("cache_hits", 0) - r.values.get("unpriced", 0) > 0
            for r in rows
        )
    )
    return DayRow(
        day=day,
        requests=c["requests"],
        cost_usd=cost,
        active_users=users,
        cost_per_active_user_usd=_ratio(cost, users) if known else None,
        conversations=c["conversations"],
        cost_per_conversation_usd=_ratio(cost, c["conversations"]) if known else None,
        unpriced_requests=c["unpriced"],
    )


def _call_costs(store: LedgerStore, rows: Sequence[_Row]) -> tuple[CallCostStats, ...]:
    """Percentiles per feature of the cost samples of the days it has rollup rows in (a sample
    is only ever recorded with its call's row), holding at most about
    :data:`~.percentiles.DEFAULT_BUDGET` samples at a time.

    One snapshot counts every ``(day, feature)`` pair at once. Features whose samples fit are read
    together, a group of them per batched read, and sorted; a feature with more samples than
    fit is worked out in a few passes over its snapshot (:func:`~.percentiles.nearest_ranks`).
    """
    days_of: dict[str | None, set[str]] = defaultdict(set)
    for r in rows:
        days_of[r.feature].add(r.day)
    features = sorted(days_of, key=lambda f: (f is not None, f or ""))
    pairs_of = {
        f: [(d, "" if f is None else quote(f, safe="")) for d in sorted(days_of[f])] for f in features
    }
    snapshot = snapshot_call_costs(store, [pair for f in features for pair in pairs_of[f]])
    found: dict[str | None, tuple[int, list[int | None]]] = {}
    group: dict[str | None, list[CostPair]] = {}
    held = 0
    for feature in features:
        n = snapshot.count(pairs_of[feature])
        if n > DEFAULT_BUDGET:
            found[feature] = (n, nearest_ranks(_reader(snapshot, pairs_of[feature]), n, _PERCENTS))
            continue
        if held + n > DEFAULT_BUDGET:
            found.update(_read_group(snapshot, group))
            group, held = {}, 0
        group[feature] = pairs_of[feature]
        held += n
    found.update(_read_group(snapshot, group))
    return tuple(
        CallCostStats(
            feature=f,
            calls=found[f][0],
            p50_usd=_usd_or_none(found[f][1][0]),
            p95_usd=_usd_or_none(found[f][1][1]),
        )
        for f in features
    )


_PERCENTS = (50, 95)


def _reader(snapshot: CallCostSnapshot, pairs: Sequence[CostPair]) -> Callable[[], Iterator[list[int]]]:
    """A pass over the snapshot's costs of ``pairs`` each time it is called."""
    return lambda: (costs for _, costs in snapshot.scan(pairs))


def _read_group(
    snapshot: CallCostSnapshot, pairs_of: Mapping[str | None, Sequence[CostPair]]
) -> dict[str | None, tuple[int, list[int | None]]]:
    """Percentiles of features whose samples fit in memory together: one batched read."""
    feature_of = {pair: f for f, pairs in pairs_of.items() for pair in pairs}
    costs: dict[str | None, list[int]] = {f: [] for f in pairs_of}
    for pair, chunk in snapshot.scan(list(feature_of)):
        costs[feature_of[pair]] += chunk
    return {
        f: (len(c), nearest_ranks(functools.partial(tuple, (c,)), len(c), _PERCENTS))
        for f, c in costs.items()
    }


def _usd_or_none(nanos: int | None) -> Decimal | None:
    return None if nanos is None else _usd(nanos)


MIN_PROJECTION_DAYS = 1
"""Local days of a month that must have fully elapsed before it is projected."""


def _midnight(d: date, tz: tzinfo) -> datetime:
    """Local midnight starting day ``d`` (fold 0: a midnight a DST change skips is the change's
    instant, a repeated one its first occurrence)."""
    return datetime(d.year, d.month, d.day, tzinfo=tz)


def _seconds(start: datetime, end: datetime) -> Decimal:
    """Real seconds from ``start`` to ``end`` (aware datetimes, any zone)."""
    return Decimal(str(end.timestamp())) - Decimal(str(start.timestamp()))


def _projection(store: LedgerStore, now: datetime) -> Projection:
    tz = cast(tzinfo, now.tzinfo)
    first_day = now.date().replace(day=1)
    first = _midnight(first_day, tz)
    length = calendar.monthrange(now.year, now.month)[1]
    month_days = [(first_day + timedelta(days=i)).isoformat() for i in range(now.day)]
    month = _sums(map(_decode, store.rollup(month_days)))
    mtd = _usd(month["cost_nanos"])
    if first_day.month == 12 and first_day.year == 9999:  # no year 10000: take 31 days of 86,400 s
        month_s = Decimal(31 * 86_400)
    else:
        next_first = first_day + timedelta(days=length)
        month_s = _seconds(first, _midnight(next_first, tz))
    elapsed_s = min(max(_seconds(first, now), Decimal(0)), month_s)
    start = _midnight(first_day + timedelta(days=MIN_PROJECTION_DAYS), tz)
    projected: Decimal | None = None
    reason: str | None = None
    if now >= start:
        projected = (mtd * month_s / elapsed_s).quantize(_NANO_USD)
    else:
        days = "day" if MIN_PROJECTION_DAYS == 1 else f"{MIN_PROJECTION_DAYS} days"
        reason = f"too early: the month is projected from {start.isoformat()}, after its first full {days}"
    return Projection(
        month=f"{now.year:04d}-{now.month:02d}",
        month_to_date_usd=mtd,
        elapsed_days=(elapsed_s * length / month_s).quantize(Decimal("1e-6")),
        days_in_month=length,
        projected_usd=projected,
        available_from=start.isoformat(),
        reason=reason,
        unpriced_requests=month["unpriced"],
    )


class _NoBreakdownError(InvalidInputError, KeyError):
    """:meth:`Report.breakdown` of a dimension the report does not have (a ``KeyError`` too)."""

    def __str__(self) -> str:
        return str(self.args[0])  # not KeyError's quoted repr


def build_report(
    ledger_or_store: Ledger | LedgerStore,
    *,
    days: Sequence[str] | None = None,
    day: str | date | None = None,
    last_days: int | None = None,
    by: Sequence[Dimension] = DIMENSIONS,
    top: int = 10,
    percentiles: bool = True,
) -> Report:
    """Report the spend of some days from a ledger's store.

    Args:
        ledger_or_store: A :class:`~tokenbudget_core.ledger.Ledger` (its clock and time zone
            decide "today" and the month) or a bare store (then: the system clock and UTC).
        days: These ISO days.
        day: One day (ISO string or ``date``).
        last_days: The N days ending today (at most ``MAX_LAST_DAYS``, 3,660). Give at most one
            of ``days``, ``day`` and ``last_days``; with none, the last 7 days.
        by: The dimensions to break the spend down by, in order.
        top: Keep the N biggest spenders of each dimension (the rest are summed as omitted).
        percentiles: Work out p50/p95 cost per call per feature (``call_costs``). They read every
            call's cost sample of the days, in chunks, holding a bounded number of them whatever
            the days hold (:mod:`tokenbudget_core.percentiles`: a feature with more samples is
            read in a few passes): pass False where they are not shown (a metrics scrape), and
            the report's ``call_costs`` is empty.

    Raises:
        InvalidInputError: Two day selections, a malformed day, ``last_days`` over 3,660, an
            unknown dimension, a bad ``top`` or ``percentiles``, or something that is neither a
            ledger nor a store.
        BudgetUnavailableError: The store cannot be reached.

    Example:
        >>> from tokenbudget_core.ledger import Ledger
        >>> from tokenbudget_core.usage import Usage
        >>> ledger = Ledger("memory://", clock=lambda: 1_795_000_000.0)
        >>> _ = ledger.record(Usage(input_tokens=1000, output_tokens=100), model="gpt-4o", user="u-1")
        >>> build_report(ledger, last_days=1).per_day[0].cost_per_active_user_usd
        Decimal('0.003500000')
    """
    store, clock, tz, tz_name = _source(ledger_or_store)
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise InvalidInputError("top", "must be a positive integer", value=top)
    if type(percentiles) is not bool:
        raise InvalidInputError("percentiles", "must be True or False", value=percentiles)
    if isinstance(by, str | bytes) or not isinstance(by, Sequence):
        raise InvalidInputError(
            "by",
            "must be a sequence of dimensions",
            value=by,
            fix=f"e.g. by=('feature',); use {', '.join(DIMENSIONS)}",
        )
    for dim in by:
        if dim not in DIMENSIONS:
            raise InvalidInputError("by", f"unknown dimension {dim!r}", fix=f"use {', '.join(DIMENSIONS)}")
    reading = clock()
    try:
        now = datetime.fromtimestamp(reading, tz)
    except (OverflowError, ValueError, OSError, TypeError):
        raise clock_out_of_range(reading) from None
    selected = _select_days(days, day, last_days, now.date())
    wanted = set(selected)
    rows = [_decode(r) for r in store.rollup(selected) if r.day in wanted]
    by_day: dict[str, list[_Row]] = defaultdict(list)
    for r in rows:
        by_day[r.day].append(r)
    return Report(
        days=tuple(selected),
        timezone=tz_name,
        generated_at=now.isoformat(),
        totals=_totals(rows),
        breakdowns=tuple(_breakdown(rows, dim, top) for dim in by),
        per_day=tuple(_day_row(d, by_day[d]) for d in selected),
        call_costs=_call_costs(store, rows) if percentiles else (),
        projection=_projection(store, now),
    )
