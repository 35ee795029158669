"""``memory://``: the reference store, in one process (tests, notebooks)."""

from __future__ import annotations

import heapq
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

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


@dataclass(slots=True)
class _Reservation:
    checks: tuple[Check, ...]
    expires_ms: int
    state: RequestState


class MemoryStore:
    """The ledger's semantics in plain dicts under one lock (see :mod:`.base`)."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._lock = threading.Lock()
        self._spent: dict[tuple[str, str, Metric], int] = defaultdict(int)
        self._reserved: dict[tuple[str, str, Metric], int] = defaultdict(int)
        self._requests: dict[tuple[str, str], _Reservation] = {}
        self._rollup: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._marks: dict[str, float] = {}
        self._costs: dict[tuple[str, str], list[int]] = defaultdict(list)
        self._leases: dict[str, list[tuple[int, str]]] = defaultdict(list)  # per day: heap of (expiry, id)

    def _expire(self, day: str, now_ms: int) -> None:
        # The day's leases that ran out (a heap: amortised O(log n) per reservation).
        leases = self._leases[day]
        while leases and leases[0][0] <= now_ms:
            _, rid = heapq.heappop(leases)
            r = self._requests.get((day, rid))
            if r is not None and r.state == "reserved":
                self._unreserve(day, r)
                r.state = "expired"

    def _unreserve(self, day: str, r: _Reservation) -> None:
        for c in r.checks:
            self._reserved[(day, c.scope, c.metric)] -= c.amount

    def reserve(self, req: ReserveRequest) -> ReserveOutcome:
        with self._lock:
            self._expire(req.day, req.now_ms)
            known = self._requests.get((req.day, req.request_id))
            if known is not None:
                return ReserveOutcome(ok=True, state=known.state, duplicate=True)
            for c in req.checks:
                used = (
                    self._spent[(req.day, c.scope, c.metric)] + self._reserved[(req.day, c.scope, c.metric)]
                )
                if c.limit is not None and used + c.amount > c.limit:
                    return ReserveOutcome(ok=False, failed=c, used=used)
            for c in req.checks:
                self._reserved[(req.day, c.scope, c.metric)] += c.amount
            self._requests[(req.day, req.request_id)] = _Reservation(
                tuple(req.checks), req.now_ms + req.lease_ms, "reserved"
            )
            heapq.heappush(self._leases[req.day], (req.now_ms + req.lease_ms, req.request_id))
            usage = tuple(
                self._spent[(req.day, c.scope, c.metric)] + self._reserved[(req.day, c.scope, c.metric)]
                for c in req.checks
            )
            return ReserveOutcome(ok=True, state="reserved", usage=usage)

    def commit(self, req: CommitRequest) -> CommitOutcome:
        with self._lock:
            known = self._requests.get((req.day, req.request_id))
            previous = known.state if known else None
            if known is not None and known.state == "committed":
                return CommitOutcome(applied=False, previous="committed")
            if known is not None and known.state == "reserved":
                self._unreserve(req.day, known)
            for c in req.charges:
                self._spent[(req.day, c.scope, c.metric)] += c.amount
            row = self._rollup[(req.day, req.rollup_key)]
            for k, v in req.rollup.items():
                row[k] += v
            if known is None:
                self._requests[(req.day, req.request_id)] = _Reservation((), 0, "committed")
            else:
                known.state = "committed"
            if req.call_cost_key is not None:
                self._costs[(req.day, req.call_cost_key)].append(req.rollup.get("cost_nanos", 0))
            spent = tuple(self._spent[(req.day, c.scope, c.metric)] for c in req.charges)
            return CommitOutcome(
                applied=True, previous=previous, spent=spent, recorded_cost=req.call_cost_key is not None
            )

    def release(self, day: str, request_id: str, now_ms: int) -> bool:
        with self._lock:
            known = self._requests.get((day, request_id))
            if known is None:
                self._requests[(day, request_id)] = _Reservation((), 0, "released")
                return False
            if known.state != "reserved":
                return False
            self._unreserve(day, known)
            known.state = "released"
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
