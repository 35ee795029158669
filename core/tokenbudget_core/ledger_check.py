"""Checking a call against the budgets without holding anything: what :meth:`Ledger.check` runs on.

A check must answer exactly as :meth:`~tokenbudget_core.ledger.Ledger.reserve` would (per-call
limits, the worst case priced the same way, the ladder's step and soft refusals) yet never touch
the store's reserved totals, not even by reserving and releasing at once: concurrent checks would
then refuse real reservations that fit. :func:`checking_ledger` gives a ledger configured like
the one checked, whose store (:class:`ReadOnlyReserveStore`) answers a reservation from
:meth:`~tokenbudget_core.stores.base.LedgerStore.totals` by the store contract's rule
(``spent + reserved + amount <= limit`` for every check, the first that fails named) and writes
nothing. The rules stay the ledger's own: only the store's write is left out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .stores.base import (
    CommitOutcome,
    CommitRequest,
    LedgerStore,
    Metric,
    ReserveOutcome,
    ReserveRequest,
    RollupRow,
)

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from .budgets import BudgetPolicy
    from .ledger import Ledger, OnUnavailable
    from .price_overrides import PriceTable
    from .registry import ModelRegistry

__all__ = ["ReadOnlyReserveStore", "checking_ledger"]


class ReadOnlyReserveStore:
    """A store whose ``reserve`` only reads: what the reservation *would* do, nothing held.

    Reads are delegated to ``store``; ``release`` is a no-op (nothing was held). ``commit``,
    ``mark_once`` and ``record_call_cost`` are delegated (a checker built by
    :func:`checking_ledger` never calls them: the checked ledger replays its spool).
    """

    def __init__(self, store: LedgerStore) -> None:
        self.store = store
        self.url = store.url
        # named as the store it reads (its spool lines are the checked ledger's own)
        self.identity = getattr(store, "identity", None)
        self.path = getattr(store, "path", None)

    def reserve(self, req: ReserveRequest) -> ReserveOutcome:
        """The outcome of ``req`` on the store's current totals (expired leases excluded)."""
        totals = self.store.totals(req.day, [(c.scope, c.metric) for c in req.checks], req.now_ms)
        usage: list[int] = []
        for c in req.checks:
            used = sum(totals[(c.scope, c.metric)])
            if c.limit is not None and used + c.amount > c.limit:
                return ReserveOutcome(ok=False, failed=c, used=used)
            usage.append(used + c.amount)
        return ReserveOutcome(ok=True, state="reserved", usage=tuple(usage))

    def commit(self, req: CommitRequest) -> CommitOutcome:
        return self.store.commit(req)

    def release(self, day: str, request_id: str, now_ms: int, *, forget: bool = False) -> bool:
        return False

    def totals(
        self, day: str, scopes: Sequence[tuple[str, Metric]], now_ms: int
    ) -> dict[tuple[str, Metric], tuple[int, int]]:
        return self.store.totals(day, scopes, now_ms)

    def rollup(self, days: Sequence[str]) -> list[RollupRow]:
        return self.store.rollup(days)

    # A check writes nothing; these are the store's own, for a ledger that would commit through it.
    def mark_once(self, key: str, ttl_s: int) -> bool:
        return self.store.mark_once(key, ttl_s)

    def record_call_cost(self, day: str, feature: str, cost_nanos: int) -> None:
        self.store.record_call_cost(day, feature, cost_nanos)

    def call_costs(self, day: str, feature: str) -> list[int]:
        return self.store.call_costs(day, feature)

    def ping(self) -> None:
        self.store.ping()

    def close(self) -> None:
        return None  # the checked ledger owns the connections


def checking_ledger(
    ledger: Ledger,
    *,
    policy: BudgetPolicy,
    registry: ModelRegistry,
    prices: PriceTable | None,
    on_unavailable: OnUnavailable,
    clock: Callable[[], float] | None = None,
    tz: ZoneInfo | None = None,
    lease_ms: int | None = None,
    store: LedgerStore | None = None,
) -> Ledger:
    """A ledger like ``ledger`` (zone, clock, lease, spool) with the given ``policy``,
    ``registry``, ``prices`` and fail mode, whose ``reserve`` answers from the totals of
    ``ledger``'s store and holds nothing. ``clock``, ``tz``, ``lease_ms`` and ``store`` (each
    default: ``ledger``'s now) are the ones :meth:`Ledger.check <tokenbudget_core.ledger.Ledger.check>`
    read when it decided to build this checker: it builds another when any is reassigned.

    It fires no alerts (a check spends nothing), and leaves the spool's replay and the release of
    orphaned reservations to ``ledger`` (whose sinks get a replayed commit's alerts): a check that
    is the first store call after an outage replays through ``ledger``, never on its own. It
    orphans nothing (a check holds nothing to give back)."""
    from .ledger import Ledger  # the ledger module builds checkers lazily: no import cycle

    class _CheckingLedger(Ledger):
        def _replay_due(self) -> None:
            ledger._replay_due()

        def _orphan(self, day: str | tuple[str, ...], request_id: str, *, forget: bool = False) -> None:
            return None

    checker = _CheckingLedger(
        ReadOnlyReserveStore(ledger.store if store is None else store),
        policy=policy,
        timezone=(ledger.tz if tz is None else tz).key,
        lease_seconds=(ledger.lease_ms if lease_ms is None else lease_ms) / 1000,
        spool_path=ledger.spool.path,
        alerts=[],
        registry=registry,
        prices=prices,
        clock=ledger.clock if clock is None else clock,
    )
    checker.on_unavailable = on_unavailable  # set after: a checker never writes the spool it names
    return checker
