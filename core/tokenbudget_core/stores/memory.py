"""``memory://``: the reference store, in one process (tests, notebooks)."""

from __future__ import annotations

import heapq
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import TypeAlias

from ._fork import reset_after_fork
from .base import (
    CONVERSATION_MARK_TTL_S,
    Check,
    CommitOutcome,
    CommitRequest,
    CostPair,
    Keys,
    Metric,
    RequestState,
    ReserveOutcome,
    ReserveRequest,
    RollupRow,
    check_cost_pairs,
    check_days,
)

__all__ = ["MemoryStore"]


_Held: TypeAlias = tuple[list[list[int]], Sequence[int], int]
"""A live reservation: the balance cells it holds on, the amount it holds on each, and when its
lease ends (its entry in the day's lease heap: an id forgotten and reserved again has two)."""
_NOTHING_HELD: _Held = ([], (), 0)


def _unreserve(held: _Held) -> None:
    cells, amounts, _ = held
    for cell, amount in zip(cells, amounts, strict=True):
        cell[1] -= amount


class MemoryStore:
    """The ledger's semantics in plain dicts under one lock (see :mod:`.base`).

    Besides the :class:`~.base.LedgerStore` contract it has a fast path the ledger uses
    (:meth:`cells`, :meth:`reserve_cells`, :meth:`commit_cells`): the same operations on the
    balance cells of one payer's budgets, which the ledger looks up once per day and keeps, and
    plain amounts, without request and outcome objects.

    A process forked from one holding a store gets a copy of the data and a lock of its own;
    a fork waits for the call another thread is making to finish, so the copy is never half
    way through one.
    """

    commits_conversation_marks = True
    """A commit's ``conversation_mark`` is set under the commit's lock (see :mod:`.base`)."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._lock = threading.Lock()
        # Per day: (scope, metric) -> [spent, reserved].
        self._bal: dict[str, dict[tuple[str, Metric], list[int]]] = defaultdict(dict)
        # Per (day, request id): a live reservation's (cells, amounts, expiry), replaced by its final
        # state (a plain string) when it settles: one dict operation per reserve and commit.
        self._states: dict[tuple[str, str], RequestState | _Held] = {}
        self._rollup: dict[tuple[str, str], defaultdict[str, int]] = {}
        self._marks: dict[str, float] = {}
        self._mark_holders: dict[str, str] = {}  # who set a mark with mark_once_for
        self._costs: dict[tuple[str, str], list[int]] = defaultdict(list)
        self._leases: dict[str, list[tuple[int, str]]] = defaultdict(list)  # per day: heap of (expiry, id)
        reset_after_fork(self, quiesce=True)  # its lock is held for a few dict operations only

    def _after_fork_in_child(self) -> None:
        # The parent's lock may have been held by a thread that does not exist here.
        self._lock = threading.Lock()

    def _expire(self, day: str, now_ms: int) -> None:
        # The day's leases that ran out (a heap: amortised O(log n) per reservation).
        leases = self._leases[day]
        while leases and leases[0][0] <= now_ms:
            expiry, rid = heapq.heappop(leases)
            held = self._states.get((day, rid))
            if type(held) is tuple and held[2] == expiry:  # not a later reservation under the id
                _unreserve(held)
                self._states[(day, rid)] = "expired"

    def _lookup(self, day: str, keys: Keys) -> list[list[int]]:
        bal = self._bal[day]
        cells = []
        for k in keys:
            cell = bal.get(k)
            if cell is None:
                cell = bal[k] = [0, 0]
            cells.append(cell)
        return cells

    def cells(self, day: str, keys: Keys) -> list[list[int]]:
        """The balance cells of the budgets ``keys`` (``(scope, metric)``, each once) on ``day``,
        created at zero, for :meth:`reserve_cells` and :meth:`commit_cells`. A caller may keep
        them for the day: a memory store never drops a day's balances."""
        with self._lock:
            return self._lookup(day, keys)

    def reserve_cells(
        self,
        day: str,
        request_id: str,
        keys: Keys,
        cells: list[list[int]],
        amounts: Sequence[int],
        limits: Sequence[int | None],
        now_ms: int,
        lease_ms: int,
    ) -> tuple[int, ...] | ReserveOutcome:
        """:meth:`reserve` of ``amounts`` on the budgets ``keys`` (their :meth:`cells` on ``day``)
        limited by ``limits``: ``spent + reserved`` per budget after reserving, or the outcome of
        a refused or duplicate request."""
        key = (day, request_id)
        with self._lock:
            leases = self._leases[day]
            if leases and leases[0][0] <= now_ms:
                self._expire(day, now_ms)
            known = self._states.get(key)
            if known is not None:
                state: RequestState = "reserved" if type(known) is tuple else known  # type: ignore[assignment]
                return ReserveOutcome(ok=True, state=state, duplicate=True)
            for i, (cell, amount, limit) in enumerate(zip(cells, amounts, limits, strict=True)):
                if limit is not None and cell[0] + cell[1] + amount > limit:
                    scope, metric = keys[i]
                    failed = Check(scope=scope, metric=metric, amount=amount, limit=limit)
                    return ReserveOutcome(ok=False, failed=failed, used=cell[0] + cell[1])
            for cell, amount in zip(cells, amounts, strict=True):
                cell[1] += amount
            expiry = now_ms + lease_ms
            self._states[key] = (cells, amounts, expiry)
            heapq.heappush(leases, (expiry, request_id))
            return tuple([cell[0] + cell[1] for cell in cells])

    def reserve(self, req: ReserveRequest) -> ReserveOutcome:
        keys = tuple([(c.scope, c.metric) for c in req.checks])
        found = self.reserve_cells(
            req.day, req.request_id, keys, self.cells(req.day, keys), tuple([c.amount for c in req.checks]),
            [c.limit for c in req.checks], req.now_ms, req.lease_ms,
        )  # fmt: skip
        if isinstance(found, ReserveOutcome):
            return found
        return ReserveOutcome(ok=True, state="reserved", usage=found)

    def commit_cells(
        self,
        day: str,
        request_id: str,
        cells: list[list[int]],
        amounts: Sequence[int],
        rollup_key: str,
        rollup: Mapping[str, int],
        call_cost_key: str | None,
        conversation_mark: str | None = None,
    ) -> tuple[bool, RequestState | None, tuple[int, ...]]:
        """:meth:`commit` of ``amounts`` to the budgets of ``cells`` (as in :meth:`reserve_cells`):
        ``(applied, previous, spent per budget)``; ``conversation_mark`` as a commit request's."""
        key = (day, request_id)
        with self._lock:
            known = self._states.get(key)
            if known == "committed":
                return False, "committed", ()
            previous: RequestState | None
            if type(known) is tuple:
                held_cells, held, _ = known
                previous = "reserved"
            else:
                held_cells, held, _ = _NOTHING_HELD
                previous = known  # type: ignore[assignment]
            if held_cells is cells:  # reserved on these budgets: give back and charge in one pass
                for cell, reserved, amount in zip(cells, held, amounts, strict=True):
                    cell[1] -= reserved
                    cell[0] += amount
            else:
                for cell, reserved in zip(held_cells, held, strict=True):
                    cell[1] -= reserved
                for cell, amount in zip(cells, amounts, strict=True):
                    cell[0] += amount
            row = self._rollup.get((day, rollup_key))
            if row is None:
                row = self._rollup[(day, rollup_key)] = defaultdict(int)
            for k, v in rollup.items():
                row[k] += v
            if conversation_mark is not None and self._set_mark(conversation_mark, CONVERSATION_MARK_TTL_S):
                row["conversations"] += 1
            self._states[key] = "committed"
            if call_cost_key is not None:
                self._costs[(day, call_cost_key)].append(rollup.get("cost_nanos", 0))
            return True, previous, tuple([cell[0] for cell in cells])  # after every charge

    def commit(self, req: CommitRequest) -> CommitOutcome:
        keys = tuple([(c.scope, c.metric) for c in req.charges])
        applied, previous, spent = self.commit_cells(
            req.day, req.request_id, self.cells(req.day, keys), [c.amount for c in req.charges],
            req.rollup_key, req.rollup, req.call_cost_key, req.conversation_mark,
        )  # fmt: skip
        if not applied:
            return CommitOutcome(applied=False, previous=previous)
        return CommitOutcome(
            applied=True, previous=previous, spent=spent, recorded_cost=req.call_cost_key is not None
        )

    def release(self, day: str, request_id: str, now_ms: int, *, forget: bool = False) -> bool:
        with self._lock:
            key = (day, request_id)
            state = self._states.get(key)
            if type(state) is tuple:
                _unreserve(state)
                if forget:
                    del self._states[key]
                else:
                    self._states[key] = "released"
                return True
            if state is None and not forget:
                self._states[key] = "released"
            return False

    def totals(
        self, day: str, scopes: Sequence[tuple[str, Metric]], now_ms: int
    ) -> dict[tuple[str, Metric], tuple[int, int]]:
        with self._lock:
            self._expire(day, now_ms)
            bal = self._bal.get(day, {})
            return {(s, m): tuple(bal.get((s, m), (0, 0))) for s, m in scopes}  # type: ignore[misc]

    def rollup(self, days: Sequence[str]) -> list[RollupRow]:
        days = check_days(days)
        with self._lock:
            wanted = set(days)
            return [
                RollupRow(day=d, rollup_key=k, values=dict(v))
                for (d, k), v in self._rollup.items()
                if d in wanted
            ]

    def _set_mark(self, key: str, ttl_s: int) -> bool:
        """Set the once-mark ``key`` unless it holds (the lock held): True when this call set it."""
        now = time.time()
        expires = self._marks.get(key)
        if expires is not None and expires > now:
            return False
        self._marks[key] = now + ttl_s
        self._mark_holders.pop(key, None)
        return True

    def mark_once(self, key: str, ttl_s: int) -> bool:
        with self._lock:
            return self._set_mark(key, ttl_s)

    def mark_once_for(self, key: str, ttl_s: int, holder: str) -> bool:
        """:meth:`mark_once`, also True when ``holder`` set the mark (see :mod:`.base`)."""
        with self._lock:
            now = time.time()
            expires = self._marks.get(key)
            if expires is not None and expires > now:
                return self._mark_holders.get(key) == holder
            self._marks[key] = now + ttl_s
            self._mark_holders[key] = holder
            return True

    def record_call_cost(self, day: str, feature: str, cost_nanos: int) -> None:
        with self._lock:
            self._costs[(day, feature)].append(cost_nanos)

    def call_costs(self, day: str, feature: str) -> list[int]:
        with self._lock:
            return list(self._costs.get((day, feature), ()))

    def call_cost_counts(self, pairs: Sequence[CostPair]) -> dict[CostPair, int]:
        """How many costs each pair has now (see :class:`~.base.CallCostSnapshot`)."""
        wanted = check_cost_pairs(pairs)
        with self._lock:
            return {pair: len(self._costs.get(pair, ())) for pair in wanted}

    def scan_call_costs(
        self, counts: Mapping[CostPair, int], size: int
    ) -> Iterator[tuple[CostPair, list[int]]]:
        """The first ``counts[pair]`` costs of each pair, in chunks of at most ``size``."""
        for pair, n in counts.items():
            for start in range(0, n, size):
                with self._lock:
                    chunk = self._costs.get(pair, [])[start : min(start + size, n)]
                if chunk:
                    yield pair, chunk

    def ping(self) -> None:
        return None

    def close(self) -> None:
        return None
