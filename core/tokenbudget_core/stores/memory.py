"""``memory://``: the reference store, in one process (tests, notebooks)."""

from __future__ import annotations

import heapq
import threading
import time
from collections import defaultdict
from collections.abc import Sequence

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


class MemoryStore:
    """The ledger's semantics in plain dicts under one lock (see :mod:`.base`)."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._lock = threading.Lock()
        self._spent: dict[tuple[str, str, Metric], int] = defaultdict(int)
        self._reserved: dict[tuple[str, str, Metric], int] = defaultdict(int)
        # Request states stay small and untracked by the cyclic GC (plain strings); the checks of
        # a reservation are kept only while it is live.
        self._states: dict[tuple[str, str], RequestState] = {}
        self._live: dict[tuple[str, str], tuple[Check, ...]] = {}
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
        for c in self._live.pop((day, rid), ()):
            self._reserved[(day, c.scope, c.metric)] -= c.amount

    def reserve(self, req: ReserveRequest) -> ReserveOutcome:
        with self._lock:
            self._expire(req.day, req.now_ms)
            key = (req.day, req.request_id)
            known = self._states.get(key)
            if known is not None:
                return ReserveOutcome(ok=True, state=known, duplicate=True)
            spent, reserved = self._spent, self._reserved
            for c in req.checks:
                used = spent[(req.day, c.scope, c.metric)] + reserved[(req.day, c.scope, c.metric)]
                if c.limit is not None and used + c.amount > c.limit:
                    return ReserveOutcome(ok=False, failed=c, used=used)
            for c in req.checks:
                reserved[(req.day, c.scope, c.metric)] += c.amount
            self._states[key] = "reserved"
            self._live[key] = tuple(req.checks)
            heapq.heappush(self._leases[req.day], (req.now_ms + req.lease_ms, req.request_id))
            usage = tuple(
                spent[(req.day, c.scope, c.metric)] + reserved[(req.day, c.scope, c.metric)]
                for c in req.checks
            )
            return ReserveOutcome(ok=True, state="reserved", usage=usage)

    def commit(self, req: CommitRequest) -> CommitOutcome:
        with self._lock:
            key = (req.day, req.request_id)
            previous = self._states.get(key)
            if previous == "committed":
                return CommitOutcome(applied=False, previous="committed")
            if previous == "reserved":
                self._unreserve(req.day, req.request_id)
            for c in req.charges:
                self._spent[(req.day, c.scope, c.metric)] += c.amount
            row = self._rollup[(req.day, req.rollup_key)]
            for k, v in req.rollup.items():
                row[k] += v
            self._states[key] = "committed"
            if req.call_cost_key is not None:
                self._costs[(req.day, req.call_cost_key)].append(req.rollup.get("cost_nanos", 0))
            spent = tuple(self._spent[(req.day, c.scope, c.metric)] for c in req.charges)
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
            return {(s, m): (self._spent[(day, s, m)], self._reserved[(day, s, m)]) for s, m in scopes}

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
