"""Exact nearest-rank percentiles read in passes (tokenbudget_core.percentiles), and a report's
p50/p95 of a feature with more cost samples than a report holds at once."""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from urllib.parse import quote

import pytest

from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.money import nanos_to_usd
from tokenbudget_core.percentiles import DEFAULT_BUDGET, nearest_rank, nearest_ranks
from tokenbudget_core.reports import build_report
from tokenbudget_core.stores.memory import MemoryStore
from tokenbudget_core.usage import Usage

BUDGET = 1_024
PERCENTS = [1, 5, 25, 50, 75, 95, 99, 100]


def by_sorting(values: Sequence[int], percent: int) -> int:
    """The definition: the value at rank ceil(percent * n / 100) (at least 1) of the sorted values."""
    ordered = sorted(values)
    return ordered[max(-(-percent * len(ordered) // 100), 1) - 1]


class Passes:
    """``read`` for nearest_ranks over ``values`` in chunks; counts the passes and the largest
    chunk it handed out."""

    def __init__(self, values: Sequence[int], chunk: int) -> None:
        self.values, self.chunk, self.passes = list(values), chunk, 0

    def __call__(self) -> Iterable[Sequence[int]]:
        self.passes += 1
        return (self.values[i : i + self.chunk] for i in range(0, len(self.values), self.chunk))


def spreads(rng: random.Random, n: int) -> dict[str, list[int]]:
    return {
        "uniform": [rng.randrange(10**9) for _ in range(n)],
        "long tail": [int(rng.expovariate(1 / 20_000) ** 1.5) for _ in range(n)],
        "few distinct": [rng.choice([7_050, 20_850, 41_000]) for _ in range(n)],
        "one value": [12_345] * n,
        "one value and outliers": [5] * (n - 3) + [1, 10**12, 10**12 + 1],
        "ascending": list(range(n)),
        "descending": list(range(n, 0, -1)),
        "clusters": [rng.choice([0, 10**6]) + rng.randrange(50) for _ in range(n)],
    }


@pytest.mark.parametrize("n", [1, 2, 99, 1_024, 1_025, 20_000])
def test_every_percentile_is_the_one_sorting_gives_whatever_the_spread(n: int) -> None:
    rng = random.Random(n)
    for name, values in spreads(rng, n).items():
        read = Passes(values, chunk=rng.choice([1, 7, 500, 4_096]))
        found = nearest_ranks(read, n, PERCENTS, budget=BUDGET)
        assert found == [by_sorting(values, p) for p in PERCENTS], name
        if n <= BUDGET:
            assert read.passes == 1, name  # what fits is read once and sorted
        else:
            assert read.passes <= 5, name  # a few passes: sample, count, collect (more when skewed)


@pytest.mark.parametrize(("budget", "passes"), [(20_000, 2), (BUDGET, 3)])
def test_many_values_are_found_in_a_few_passes(budget: int, passes: int) -> None:
    """A sample from the first values, then a count that keeps each rank's likely neighbourhood:
    with room for it, that answers; with a tiny budget the neighbourhood is too narrow to be
    sure of, and one more pass collects the interval the count found."""
    rng = random.Random(7)
    values = [int(rng.lognormvariate(10, 2)) for _ in range(200_000)]
    read = Passes(values, chunk=8_192)
    assert nearest_ranks(read, len(values), [50, 95], budget=budget) == [
        by_sorting(values, 50),
        by_sorting(values, 95),
    ]
    assert read.passes == passes


def test_no_values_have_no_percentiles_and_what_a_pass_lacks_is_not_invented() -> None:
    assert nearest_ranks(list, 0, [50, 95]) == [None, None]
    assert nearest_ranks(lambda: [[3, 1, 2]], 3, [50]) == [2]
    # the snapshot said 5 values, the read gives 3 (purged in between): the ranks of what was read
    assert nearest_ranks(lambda: [[30, 10, 20]], 5, [1, 50, 100]) == [10, 20, 30]
    assert nearest_ranks(list, 5, [50]) == [None]


def test_values_that_change_between_passes_cannot_make_it_loop_or_fail() -> None:
    rng = random.Random(3)
    base = [rng.randrange(10**6) for _ in range(5_000)]
    passes = [0]

    def growing() -> Iterable[Sequence[int]]:  # every pass sees other values than the last
        passes[0] += 1
        return [base, [rng.randrange(10**6) for _ in range(1_000 * passes[0])]]

    found = nearest_ranks(growing, len(base), [50, 95], budget=BUDGET)
    assert all(v is not None and 0 <= v < 10**6 for v in found)

    def shrinking() -> Iterable[Sequence[int]]:
        passes[0] += 1
        return [base[: max(len(base) - 2_000 * passes[0], 0)]]

    passes[0] = 0
    assert len(nearest_ranks(shrinking, len(base), [50, 95], budget=BUDGET)) == 2


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n": -1}, "n"),
        ({"n": 2.0}, "n"),
        ({"percents": [0]}, "percents[0]"),
        ({"percents": [50, 101]}, "percents[1]"),
        ({"percents": [50.0]}, "percents[0]"),
        ({"budget": 10}, "budget"),
        ({"budget": True}, "budget"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"read": lambda: [[1, 2]], "n": 2, "percents": [50], **kwargs}
    with pytest.raises(InvalidInputError) as caught:
        nearest_ranks(**args)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_nearest_rank_is_at_least_one() -> None:
    assert [nearest_rank(1, 1), nearest_rank(100, 50), nearest_rank(100, 95), nearest_rank(3, 100)] == [
        1,
        50,
        95,
        3,
    ]


def test_a_report_works_out_p50_p95_of_more_samples_than_it_holds() -> None:
    """A feature with more cost samples than :data:`DEFAULT_BUDGET` (read in passes) next to
    small ones (read together): every figure is the sorted samples' nearest rank."""
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    store = MemoryStore()
    ledger = Ledger(store, policy=BudgetPolicy(), clock=now.timestamp)
    usage = Usage(input_tokens=100, output_tokens=10)
    for feature in ("busy feature", "quiet", "also quiet"):
        ledger.record(usage, model="gpt-4o-mini", feature=feature, user="u1")
    rng = random.Random(11)
    day, busy = ledger.day(), quote("busy feature", safe="")
    extra = [int(rng.paretovariate(1.2) * 10_000) for _ in range(DEFAULT_BUDGET + 5_000)]
    for cost in extra:
        store.record_call_cost(day, busy, cost)
    store.record_call_cost(day, "quiet", 99)
    report = build_report(ledger, days=[day])
    stats = {s.feature: s for s in report.call_costs}
    samples: Callable[[str], list[int]] = lambda f: store.call_costs(day, quote(f, safe=""))  # noqa: E731
    for feature in ("busy feature", "quiet", "also quiet"):
        costs = samples(feature)
        assert stats[feature].calls == len(costs)
        assert stats[feature].p50_usd == nanos_to_usd(by_sorting(costs, 50))
        assert stats[feature].p95_usd == nanos_to_usd(by_sorting(costs, 95))
    assert stats["busy feature"].calls == DEFAULT_BUDGET + 5_001
    assert stats["quiet"].calls == 2


def ascending(n: int, chunk: int = 4_096) -> Callable[[], Iterable[Sequence[int]]]:
    """Values read in rising order, made chunk by chunk (the caller holds none of them)."""
    return lambda: (list(range(i, min(i + chunk, n))) for i in range(0, n, chunk))


def day_bands(n: int, days: int = 30) -> list[int]:
    """Each day's costs in a narrow band of its own, a little higher than the day before's."""
    rng = random.Random(1)
    return [
        int((1_000 + 30 * d) * (1 + rng.uniform(-0.05, 0.05))) for d in range(days) for _ in range(n // days)
    ]


@pytest.mark.parametrize("order", ["ascending", "descending", "day bands"])
def test_values_read_in_an_order_unlike_a_sample_are_found_in_a_few_passes(order: str) -> None:
    """The first sample comes from the first values read; when those are unlike the rest (costs
    drifting over the days), the next round samples the whole pass. Before, every round sampled
    the first values again: 17 rounds, 33 passes, then the rest of the data held at once (review
    s23 #1)."""
    n = 200_000
    values = {"ascending": list(range(n)), "descending": list(range(n, 0, -1)), "day bands": day_bands(n)}[
        order
    ]
    read = Passes(values, chunk=4_096)
    found = nearest_ranks(read, len(values), [50, 95], budget=BUDGET)
    assert found == [by_sorting(values, 50), by_sorting(values, 95)]
    assert read.passes <= 5


def test_memory_stays_near_the_budget_whatever_the_order() -> None:
    n = 300_000
    tracemalloc.start()
    try:
        found = nearest_ranks(ascending(n), n, [50, 95], budget=BUDGET)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert found == [n // 2 - 1, -(-95 * n // 100) - 1]
    # one chunk, its sorted copy, the sample and ~budget values kept: well under 2 MB (all of
    # them at once would be over 10 MB)
    assert peak < 2_000_000, peak


@pytest.mark.parametrize("chunk", [1, 3])
def test_tiny_chunks_are_sampled_as_evenly_as_large_ones(chunk: int) -> None:
    """A whole-pass sample keeps every step-th value across the chunks, not the first of each:
    with one value per chunk the sample was the last values read, and values in rising order
    took every round there is and held the rest at once (review s23d #5)."""
    n = 40_000
    read = Passes(list(range(n)), chunk=chunk)
    assert nearest_ranks(read, n, [50, 95], budget=BUDGET) == [n // 2 - 1, -(-95 * n // 100) - 1]
    assert read.passes <= 5
