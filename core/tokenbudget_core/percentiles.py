"""Exact nearest-rank percentiles of more values than should be held in memory at once.

A report's p50/p95 cost per call covers every call of a feature in its days: millions of
integers for a busy app (a Python list of a million ints is about 36 MB, and sorting copies
it). :func:`nearest_ranks` finds the exact nearest-rank values while holding at most about
``budget`` values, by reading the data again instead:

1. When the values fit in ``budget``, they are read once and sorted: one pass.
2. Otherwise a sample is taken from the first values read (:data:`_SAMPLE_FROM` of them: the
   read stops there), and one pass counts how many values lie below, at and between the
   sample's distinct values (:func:`bisect.bisect_left` on each sorted chunk, so the per-value
   work is C code). Each wanted rank then lies either *at* a sample value (found: no more
   reading) or strictly between two neighbouring ones, an interval holding about
   ``n / sample size`` values when the first values are like the rest. When they are not
   (values read in rising order, or each day in a band of its own), the interval is larger,
   and the next round samples it over a whole pass, evenly spread, before counting again.
3. The counting pass also keeps the values around where the sample puts each rank (about
   ``budget`` of them); when the count confirms the rank's interval lies there, it is picked from
   them. Otherwise one more pass collects the interval's values, and an interval still over
   ``budget`` (a pathological spread) is narrowed the same way again; every round excludes at
   least the sample values, so it ends.

So a little over one pass over the data usually replaces one large sort, and memory is bounded by ``budget``
plus one chunk. ``read`` must give the same values each time it is called (a store reads a
snapshot, see :func:`tokenbudget_core.stores.base.snapshot_call_costs`); values added or
removed between passes cannot make it loop or fail: ranks are clamped to what a pass saw.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from .errors import InvalidInputError

__all__ = ["DEFAULT_BUDGET", "nearest_rank", "nearest_ranks"]

DEFAULT_BUDGET = 262_144
"""Values :func:`nearest_ranks` holds at most (about 10 MB of Python ints, with the sort)."""

_SAMPLE = 2_048
"""Sample values a narrowing pass keeps (between this and twice as many): the intervals left
hold about ``n / 2,048`` values each."""

_SAMPLE_FROM = 65_536
"""Values of an interval a sample is taken from: the sampling read stops once it has seen them."""

_MAX_ROUNDS = 16
"""Narrowing rounds before the values of an interval are collected whatever their number (only
reached when the data changes under the reads or is spread pathologically)."""


def nearest_rank(n: int, percent: int) -> int:
    """The 1-based nearest-rank position of ``percent`` among ``n`` ascending values: the
    smallest rank covering at least ``percent``% of them (at least 1)."""
    return max(-(-percent * n // 100), 1)


@dataclass(slots=True)
class _Target:
    """One wanted rank: at ``rank`` (1-based) among the values strictly between ``lo`` and
    ``hi`` (``None``: unbounded), of which there were ``size`` when last counted."""

    rank: int
    lo: int | None
    hi: int | None
    size: int
    answer: int | None = None
    boundaries: list[int] | None = None

    @property
    def interval(self) -> tuple[int | None, int | None]:
        return self.lo, self.hi


def _inside(ordered: Sequence[int], lo: int | None, hi: int | None) -> Sequence[int]:
    """The values of an ascending sequence strictly between ``lo`` and ``hi``."""
    start = 0 if lo is None else bisect_right(ordered, lo)
    stop = len(ordered) if hi is None else bisect_left(ordered, hi)
    return ordered[start:stop]


class _Sampler:
    """An evenly spread sample of the values fed (sorted chunk by chunk): between ``cap`` and
    twice as many values."""

    def __init__(self, cap: int) -> None:
        self.values: list[int] = []
        self.step = 1
        self.seen = 0
        self.cap = cap

    def feed(self, part: Sequence[int]) -> None:
        """Keep every ``step``-th value counted across the parts fed, not within each part, so
        small parts are sampled as evenly as large ones (the first value fed is always kept)."""
        if not part:
            return
        first = (self.step // 2 - self.seen) % self.step
        self.seen += len(part)
        self.values += part[first :: self.step]
        if len(self.values) > 2 * self.cap:
            self.values = sorted(self.values)[::2]
            self.step *= 2

    def boundaries(self) -> list[int]:
        return sorted(set(self.values))


class _Counter:
    """How many values fed lie below and at-or-below each boundary."""

    def __init__(self, boundaries: list[int]) -> None:
        self.boundaries = boundaries
        self.below = [0] * len(boundaries)
        self.at_or_below = [0] * len(boundaries)
        self._all_from = [0] * (len(boundaries) + 1)
        """Values lying below every boundary from this index on (added up when done)."""
        self.total = 0

    def feed(self, part: Sequence[int]) -> None:
        """Count a sorted part: bisected only against the boundaries within its range (those
        above it have it all below them, those below it none)."""
        if not part:
            return
        self.total += len(part)
        first = bisect_left(self.boundaries, part[0])
        last = bisect_right(self.boundaries, part[-1])
        below, at_or_below = self.below, self.at_or_below
        for i in range(first, last):
            b = self.boundaries[i]
            below[i] += bisect_left(part, b)
            at_or_below[i] += bisect_right(part, b)
        self._all_from[last] += len(part)

    def finish(self) -> None:
        """Add up what :meth:`feed` left for later: call once, after the pass."""
        carried = 0
        for i in range(len(self.boundaries)):
            carried += self._all_from[i]
            self.below[i] += carried
            self.at_or_below[i] += carried

    def narrow(self, target: _Target) -> None:
        """Put ``target`` at its boundary value, or in the open interval between two."""
        if self.total == 0:  # the values went away between passes: nothing left to narrow to
            target.answer = target.lo if target.lo is not None else target.hi
            return
        rank = min(target.rank, self.total)
        i = bisect_left(self.at_or_below, rank)  # first boundary with at least ``rank`` at or below
        before = self.at_or_below[i - 1] if i else 0
        if i < len(self.boundaries) and self.below[i] < rank:
            target.answer = self.boundaries[i]
            return
        target.lo = self.boundaries[i - 1] if i else target.lo
        target.hi = self.boundaries[i] if i < len(self.boundaries) else target.hi
        target.rank = rank - before
        target.size = (self.below[i] if i < len(self.boundaries) else self.total) - before


def nearest_ranks(
    read: Callable[[], Iterable[Sequence[int]]],
    n: int,
    percents: Sequence[int],
    *,
    budget: int = DEFAULT_BUDGET,
) -> list[int | None]:
    """The exact nearest-rank percentiles of ``n`` integers read in chunks, holding at most
    about ``budget`` of them in memory (see the module docstring for how).

    Args:
        read: Returns an iterable over the values in chunks (any order, any chunk size); called
            once per pass, it must give the same values each time.
        n: How many values ``read`` gives (a snapshot's count).
        percents: Percentiles wanted, each from 1 to 100.
        budget: Values held in memory at most (besides one chunk); at least 1,024.

    Returns:
        One value per percent, in order (``None`` each when ``n`` is 0).

    Raises:
        InvalidInputError: ``read`` is not callable, ``percents`` not a list, or ``n``, a
            percent or ``budget`` is out of range.

    Example:
        >>> data = list(range(1, 101))
        >>> nearest_ranks(lambda: [data[:40], data[40:]], 100, [50, 95])
        [50, 95]
    """
    if not callable(read):
        raise InvalidInputError(
            "read", "must be callable", value=type(read).__name__, fix="pass a function returning the chunks"
        )
    if type(n) is not int or n < 0:
        raise InvalidInputError("n", "must be a whole number >= 0", value=n)
    if not isinstance(percents, (list, tuple)):
        raise InvalidInputError("percents", "must be a list of whole numbers from 1 to 100", value=percents)
    for i, p in enumerate(percents):
        if type(p) is not int or not 1 <= p <= 100:
            raise InvalidInputError(f"percents[{i}]", "must be a whole number from 1 to 100", value=p)
    if type(budget) is not int or budget < 1_024:
        raise InvalidInputError("budget", "must be a whole number >= 1024", value=budget)
    if n == 0:
        return [None] * len(percents)
    if n <= budget:
        values: list[int] = []
        for chunk in read():
            values += chunk
        values.sort()
        if not values:
            return [None] * len(percents)
        return [values[nearest_rank(len(values), p) - 1] for p in percents]
    targets = [_Target(rank=nearest_rank(n, p), lo=None, hi=None, size=n) for p in percents]
    for round_ in range(_MAX_ROUNDS + 1):
        open_ = [t for t in targets if t.answer is None]
        if not open_:
            break
        # the first sample comes from the first values read; later ones, needed only when those
        # were unlike the rest (values read in rising order, days apart), from the whole pass
        _collect_or_sample(read, open_, budget, last=round_ == _MAX_ROUNDS, early=round_ == 0)
        _count(read, [t for t in open_ if t.answer is None and t.boundaries is not None], budget)
    return [t.answer for t in targets]


def _collect_or_sample(
    read: Callable[[], Iterable[Sequence[int]]],
    targets: list[_Target],
    budget: int,
    *,
    last: bool,
    early: bool,
) -> None:
    """One pass (cut short when it only samples): collect the values of each interval small
    enough (and answer its targets), sample the others (their targets get boundaries to count
    against)."""
    sizes = {t.interval: t.size for t in targets}
    small: set[tuple[int | None, int | None]] = set()
    room = budget
    for interval, size in sorted(sizes.items(), key=lambda item: item[1]):
        if size <= room or last:
            small.add(interval)
            room -= size
    large = {i for i, size in sizes.items() if size > budget and i not in small}
    kept: dict[tuple[int | None, int | None], list[int]] = {i: [] for i in small}
    samplers = {i: _Sampler(min(_SAMPLE, budget // 4)) for i in large}
    for chunk in read():
        ordered = sorted(chunk)
        for (lo, hi), values in kept.items():
            values += _inside(ordered, lo, hi)
        for (lo, hi), sampler in samplers.items():
            sampler.feed(_inside(ordered, lo, hi))
        if early and not kept and all(s.seen >= _SAMPLE_FROM for s in samplers.values()):
            break  # sampled enough: the rest of the pass would only thin the sample
    for t in targets:
        if t.interval in kept:
            values = kept[t.interval]
            values.sort()  # a concatenation of sorted runs: Timsort merges them
            t.answer = (
                values[min(t.rank, len(values)) - 1] if values else (t.lo if t.lo is not None else t.hi)
            )
        elif t.interval in samplers:
            t.boundaries = samplers[t.interval].boundaries()
        # (else: small enough, but others filled the budget: collected in the next round)


class _Guess:
    """The values of a target's likely neighbourhood, kept while a pass counts: where the sample
    puts its rank, give or take enough boundaries to hold about ``cap`` values. When the count
    puts the target inside it, the target is answered without another pass."""

    def __init__(self, target: _Target, cap: int) -> None:
        b = target.boundaries or []
        at = min(max(round(target.rank / target.size * len(b)), 0), len(b))
        spread = max(1, cap * len(b) // (2 * target.size))
        self.lo = b[at - spread] if at - spread >= 0 else target.lo
        self.hi = b[at + spread] if at + spread < len(b) else target.hi
        self.cap = cap
        self.values: list[int] | None = []

    def feed(self, ordered: Sequence[int]) -> None:
        if self.values is not None:
            self.values += _inside(ordered, self.lo, self.hi)
            if len(self.values) > self.cap:
                self.values = None  # the sample misled: give the memory back, read again

    def answer(self, target: _Target) -> None:
        """Answer ``target`` (narrowed) from the kept values when its interval is within them."""
        if self.values is None or target.answer is not None:
            return
        if not (self.lo is None or (target.lo is not None and self.lo <= target.lo)):
            return
        if not (self.hi is None or (target.hi is not None and target.hi <= self.hi)):
            return
        self.values.sort()
        inside = _inside(self.values, target.lo, target.hi)
        if len(inside) == target.size:  # (else the values changed under the reads: count again)
            target.answer = inside[target.rank - 1]


def _count(read: Callable[[], Iterable[Sequence[int]]], targets: list[_Target], budget: int) -> None:
    """One pass: count each sampled interval's values against its boundaries and narrow its
    targets (answering those whose new interval the pass kept, see :class:`_Guess`)."""
    if not targets:
        return
    counters = {t.interval: _Counter(t.boundaries or []) for t in targets}
    guesses = [_Guess(t, budget // len(targets)) for t in targets]
    for chunk in read():
        ordered = sorted(chunk)
        for (lo, hi), counter in counters.items():
            counter.feed(_inside(ordered, lo, hi))
        for guess in guesses:
            guess.feed(ordered)
    for counter in counters.values():
        counter.finish()
    for t, guess in zip(targets, guesses, strict=True):
        counters[t.interval].narrow(t)
        guess.answer(t)
        t.boundaries = None
