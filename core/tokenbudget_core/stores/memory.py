"""``memory://``: the reference store, in one process (tests, notebooks)."""

from __future__ import annotations

import heapq
import threading
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TypeAlias

from .base import (
    Check,
    CommitOutcome,
    CommitRequest,
    Metric,
    RequestState,
    ReserveOutcome,
    ReserveRequest,
    RollupRow,
)

__all__ = ["MemoryStore"]


Amounts: TypeAlias = Sequence[tuple[str, Metric, int]]
"""``(scope, metric, amount)`` per budget (the fast path's :class:`Check` without its limit)."""


class MemoryStore:
    """The ledger's semantics in plain dicts under one lock (see :mod:`.base`).

    Besides the :class:`~.base.LedgerStore` contract it has a fast path the ledger uses
    (:meth:`reserve_checks`, :meth:`commit_amounts`): the same operations on plain tuples,
    without request and outcome objects.
    """

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._lock = threading.Lock()
        # Per day: (scope, metric) -> [spent, reserved].
        self._bal: dict[str, dict[tuple[str, Metric], list[int]]] = defaultdict(dict)
        # Request states stay small and untracked by the cyclic GC (plain strings); the amounts of
        # a reservation are kept only while it is live.
        self._states: dict[tuple[str, str], RequestState] = {}
        self._live: dict[tuple[str, str], tuple[tuple[list[int], int], ...]] = {}
        self._rollup: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._marks: dict[str, float] = {}
        self._costs: dict[tuple[str, str], list[int]] = defaultdict(list)
        self._leases: dict[str, list[tuple[int, str]]] = defaultdict(list)  # per day: heap of (expiry, id)

    def _expire(self, day: str, now_ms: int) -> None:
        # The day's leases that ran out (a heap: amortised O(log n) per reservation).
        leases = self._leases[day]
        while leases and leases[0][0] <= now_ms:
            _, rid = heapq.heappop(leases)
            if self._states.get((day, rid)) == "reserved":
                self._unreserve(day, rid)
                self._states[(day, rid)] = "expired"

    def _unreserve(self, day: str, rid: str) -> None:
        for cell, amount in self._live.pop((day, rid), ()):
            cell[1] -= amount

    def reserve_checks(
        self, day: str, request_id: str, checks: Sequence[Check], now_ms: int, lease_ms: int
    ) -> tuple[int, ...] | ReserveOutcome:
        """:meth:`reserve` without the request object: ``spent + reserved`` per check after
        reserving, or the outcome of a refused or duplicate request."""
        with self._lock:
            leases = self._leases[day]
            if leases and leases[0][0] <= now_ms:
                self._expire(day, now_ms)
            key = (day, request_id)
            known = self._states.get(key)
            if known is not None:
                return ReserveOutcome(ok=True, state=known, duplicate=True)
            bal = self._bal[day]
            cells = []
            for c in checks:
                cell = bal.get((c.scope, c.metric))
                if cell is None:
                    cell = bal[(c.scope, c.metric)] = [0, 0]
                if c.limit is not None and cell[0] + cell[1] + c.amount > c.limit:
                    return ReserveOutcome(ok=False, failed=c, used=cell[0] + cell[1])
                cells.append(cell)
            held = []
            for c, cell in zip(checks, cells, strict=True):
                cell[1] += c.amount
                held.append((cell, c.amount))
            self._states[key] = "reserved"
            self._live[key] = tuple(held)
            heapq.heappush(leases, (now_ms + lease_ms, request_id))
            return tuple([cell[0] + cell[1] for cell in cells])

    def reserve(self, req: ReserveRequest) -> ReserveOutcome:
        found = self.reserve_checks(req.day, req.request_id, req.checks, req.now_ms, req.lease_ms)
        if isinstance(found, ReserveOutcome):
            return found
        return ReserveOutcome(ok=True, state="reserved", usage=found)

    def commit_amounts(
        self,
        day: str,
        request_id: str,
        charges: Amounts,
        rollup_key: str,
        rollup: Mapping[str, int],
        call_cost_key: str | None,
    ) -> tuple[bool, RequestState | None, tuple[int, ...]]:
        """:meth:`commit` without the request object: ``(applied, previous, spent per charge)``."""
        with self._lock:
            key = (day, request_id)
            previous = self._states.get(key)
            if previous == "committed":
                return False, "committed", ()
            if previous == "reserved":
                self._unreserve(day, request_id)
            bal = self._bal[day]
            cells = []
            for scope, metric, amount in charges:
                cell = bal.get((scope, metric))
                if cell is None:
                    cell = bal[(scope, metric)] = [0, 0]
                cell[0] += amount
                cells.append(cell)
            row = self._rollup[(day, rollup_key)]
            for k, v in rollup.items():
                row[k] += v
            self._states[key] = "committed"
            if call_cost_key is not None:
                self._costs[(day, call_cost_key)].append(rollup.get("cost_nanos", 0))
            return True, previous, tuple([cell[0] for cell in cells])  # after every charge

    def commit(self, req: CommitRequest) -> CommitOutcome:
        applied, previous, spent = self.commit_amounts(
            req.day,
            req.request_id,
            [(c.scope, c.metric, c.amount) for c in req.charges],
            req.rollup_key,
            req.rollup,
            req.call_cost_key,
        )
        if not applied:
            return CommitOutcome(applied=False, previous=previous)
        return CommitOutcome(
            applied=True, previous=previous, spent=spent, recorded_cost=req.call_cost_key is not None
        )

    def release(self, day: str, request_id: str, now_ms: int) -> bool:
        with self._lock:
            key = (day, request_id)
            state = self._states.get(key)
            if state is None:
                self._states[key] = "released"
                return False
            if state != "reserved":
                return False
            self._unreserve(day, request_id)
            self._states[key] = "released"
            return True

    def totals(
        self, day: str, scopes: Sequence[tuple[str, Metric]], now_ms: int
    ) -> dict[tuple[str, Metric], tuple[int, int]]:
        with self._lock:
            self._expire(day, now_ms)
            bal = self._bal.get(day, {})
            return {(s, m): tuple(bal.get((s, m), (0, 0))) for s, m in scopes}  # type: ignore[misc]

    def rollup(self, days: Sequence[str]) -> list[RollupRow]:
        with self._lock:
            wanted = set(days)
            return [
                RollupRow(day=d, rollup_key=k, values=dict(v))
                for (d, k), v in self._rollup.items()
                if d in wanted
            ]

    def mark_once(self, key: str, ttl_s: int) -> bool:
        with self._lock:
            now = time.time()
            expires = self._marks.get(key)
            if expires is not None and expires > now:
                return False
            self._marks[key] = now + ttl_s
            return True

    def record_call_cost(self, day: str, feature: str, cost_nanos: int) -> None:
        with self._lock:
            self._costs[(day, feature)].append(cost_nanos)

    def call_costs(self, day: str, feature: str) -> list[int]:
        with self._lock:
            return list(self._costs[(day, feature)])

    def ping(self) -> None:
        return None

    def close(self) -> None:
        return None
