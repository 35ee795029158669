"""The ledger: reserve before a call, commit what it used, release on error.

::

    ledger = Ledger("sqlite:///tokenbudget.db", policy=load_policy("budgets.toml"))
    with attribute(feature="support", user="u-42"):
        r = ledger.reserve(model="gpt-4o", input_tokens=1_200, max_output_tokens=500)
        try:
            response = client.chat.completions.create(...)
        except Exception:
            ledger.release(r)
            raise
        ledger.commit(r, Usage.from_openai(response))

``reserve`` counts the worst case (counted input plus the maximum output, priced with
:func:`~tokenbudget_core.pricing.cost_of`) against every budget the call touches, in one
atomic store operation, and raises :class:`~tokenbudget_core.errors.BudgetExceededError`
before the call goes out when it does not fit. Every reservation has a request id (commit
and release are idempotent) and a lease (a crashed worker's reservation expires).

Calls that name no user (neither as an argument nor in an enclosing ``attribute`` block) are one
payer, the anonymous user (``user=-`` in refusals, no user in reports): per-user budgets apply to
all of them together, so an app that passes no user ids still has a cap rather than none. Pass
an id per user (or per anonymous session) to give each their own budget.

When the store is unreachable, ``on_unavailable="closed"`` (default) refuses calls with
:class:`~tokenbudget_core.errors.BudgetUnavailableError`; ``"open"`` lets them through
unchecked. Either way a commit that cannot reach the store is spooled to local disk and
replayed later: usage is never lost, and never counted twice.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import dataclasses
import functools
import logging
import math
import operator
import os
import re
import threading
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal, NamedTuple, TypeAlias, TypeVar, cast
from urllib.parse import quote, unquote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ._frozen import positional_maker
from .alerts import Alert, AlertSink, dispatch, resolve_sinks
from .attribution import charged_ids, current_attribution
from .budgets import STEPS, BudgetPolicy, Ladder, Step
from .clocks import check_clock, clock_reading, finite
from .errors import (
    REGISTER_MODEL,
    BudgetExceededError,
    BudgetUnavailableError,
    InvalidInputError,
    StoreRefusedError,
    TokenBudgetError,
    UnknownModelError,
    UnpricedModelError,
    own_copy,
    refuse_unknown,
)
from .ledger_records import (
    BudgetCheck,
    BudgetState,
    Charge,
    Reservation,
    _commit_item,
    _CommitPlan,
    _drive,
    _failing,
    _Lane,
    _model_name,
    _new_charge,
    _new_reservation,
    _ReservePlan,
    _Scopes,
    attribution_model,
    default_spool_path,
    new_request_id,
    store_digest,
)
from .money import decimal_text, nanos_to_usd, usd_to_nanos
from .price_overrides import PriceTable, check_price_options, default_price_table
from .pricing import cost_nanos, resolved_price, scaled_cost
from .registry import ModelInfo, ModelRegistry, default_registry
from .spool import Spool, spool_from_environment
from .stores import open_store
from .stores._fork import fresh_locks_after_fork
from .stores.base import (
    CONVERSATION_MARK_TTL_S,
    Check,
    CommitOutcome,
    CommitRequest,
    LedgerStore,
    Metric,
    ReserveOutcome,
    ReserveRequest,
    commits_conversation_marks,
    redact_url,
)
from .stores.memory import MemoryStore
from .stores.redis import RedisStore
from .streams import TextCounter, cut_off_usage, text_counter
from .usage import Usage

__all__ = [
    "BudgetCheck",
    "BudgetState",
    "Charge",
    "MAX_LEASE_SECONDS",
    "Ledger",
    "OnUnavailable",
    "Reservation",
    "check_budget_options",
    "default_spool_path",
    "refuses_usage",
]

OnUnavailable: TypeAlias = Literal["closed", "open"]
T = TypeVar("T")

_LADDER_STEPS: tuple[Step, ...] = ("cheaper_tier", "smaller_context", "cache_only", "soft_refusal")
"""The ladder's steps in the order :meth:`~tokenbudget_core.budgets.Ladder.step` reads them."""

# Budget names, by scope prefix and metric.
_NAMES = {
    ("u", "tokens"): "user_daily_tokens",
    ("u", "nanos"): "user_daily_usd",
    ("U", "tokens"): "user_daily_tokens (all features)",
    ("U", "nanos"): "user_daily_usd (all features)",
    ("f", "nanos"): "feature_daily_usd",
    ("g", "nanos"): "daily_usd",
}


logger = logging.getLogger("tokenbudget.ledger")


def _enc(value: str | None) -> str:
    """Encode an id for a scope key: '/', ':', '{', '}', '|', spaces... can never forge another scope."""
    return "" if value is None else _quote(value)


@functools.lru_cache(maxsize=65_536)
def _quote(value: str) -> str:
    return quote(value, safe="")


def _payer_of_row(rollup_key: str) -> tuple[str | None, str | None]:
    """The feature and user an attribution row's key (``<feature>/<user>/<model>``, each
    :func:`_enc` -oded) names."""
    feature, user, _ = rollup_key.split("/", 2)
    return unquote(feature) or None, unquote(user) or None


MAX_LEASE_SECONDS = 7 * 86_400
"""The longest lease a ledger takes: a reservation left unsettled holds its payer's budget that
long (and every store keeps lease ends as 64-bit milliseconds)."""
ALERT_MARK_TTL_S = MAX_LEASE_SECONDS + 3 * 86_400
"""How long the store keeps the mark that an alert of a day was sent (so that it is sent once):
longer than a lease, so a reservation settled at the end of its lease finds its day's marks. Usage
landing on a day older than this less one day (recorded late with ``at=``, replayed from a spool
after a long outage) sends none of that day's alerts, rather than sending them again."""


class Ledger:
    """Budgets enforced before calls and cost attributed after them.

    Args:
        store: A store URL (``memory://``, ``sqlite:///path``, ``redis://...``) or store object;
            default ``$TOKENBUDGET_STORE``, else ``sqlite:///tokenbudget.db``.
        policy: The limits (default: none, only attribution).
        timezone: IANA zone that decides when a day starts (default UTC).
        lease_seconds: How long an unsettled reservation holds (at most a week,
            :data:`MAX_LEASE_SECONDS`).
        on_unavailable: ``"closed"`` refuses calls when the store is down; ``"open"`` lets them
            through and spools their usage.
        spool_path: Where unsendable usage waits (default ``$TOKENBUDGET_SPOOL``, else one file per
            store under ``~/.cache/tokenbudget/``, see :func:`default_spool_path`; the variable
            set but empty or blank is refused, not read as unset, by a ledger on any store but
            ``memory://``, which never spools). Either mode spools a commit the store cannot
            take (a call already sent): a spool that cannot be written is refused with
            ``on_unavailable="open"``, and logged as a WARNING with ``"closed"``.
        alerts: ``"log"``, webhook URLs (or :class:`~tokenbudget_core.alerts.Webhook` for a
            timeout of its own) and callables receiving :class:`~tokenbudget_core.alerts.Alert`.
            An alert fires once per store, from the ledger whose commit crosses the threshold:
            give every ledger of a store the same sinks.
        registry: Model registry for pricing and output limits.
        prices: Price overrides.
        clock: Returns epoch seconds (tests pass a fake clock); its reading decides the day and
            the prices (time-of-day and dated genai-prices) of reserves, and a commit prices
            its usage at its reservation's minute (:attr:`Reservation.priced_minute`: a price
            that rises meanwhile, as DeepSeek's peak hours from 00:30 UTC, cannot take the call
            past the limit its reservation checked); a reading with
            no calendar date (milliseconds, nanoseconds) is refused.

    Raises:
        InvalidInputError: A bad argument, named (a misspelt keyword with the closest one).
    """

    def __init__(
        self,
        store: str | LedgerStore | None = None,
        *,
        policy: BudgetPolicy | None = None,
        timezone: str = "UTC",
        lease_seconds: float = 600.0,
        on_unavailable: OnUnavailable = "closed",
        spool_path: str | os.PathLike[str] | None = None,
        alerts: Sequence[str | AlertSink] | None = None,
        registry: ModelRegistry | None = None,
        prices: PriceTable | None = None,
        clock: Callable[[], float] = time.time,
        **unknown: object,
    ) -> None:
        if unknown:  # a misspelt keyword named, with the closest one (not a bare TypeError)
            refuse_unknown("Ledger", unknown, _LEDGER_ARGS, kind="argument")
        if store is not None and not isinstance(store, str) and not isinstance(store, LedgerStore):
            raise InvalidInputError(
                "store",
                f"must be a store URL or a LedgerStore, got {type(store).__name__}",
                value=store,
                fix="memory://, sqlite:///path/to/file.db or redis://host:port/db",
            )
        check_price_options(registry, prices)
        check_clock(clock)
        now = clock_reading(clock())
        if alerts is not None and (isinstance(alerts, str | bytes) or not isinstance(alerts, Sequence)):
            raise InvalidInputError(
                "alerts",
                "must be a list of sinks",
                value=alerts,
                fix='["log"], ["https://..."] or [a callable]',
            )
        if not isinstance(timezone, str):
            raise InvalidInputError("timezone", "must be an IANA time zone name", value=timezone, fix="'UTC'")
        try:  # (before the store is opened: a bad name leaves no connection or file behind)
            self._tz = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError, OSError) as e:  # OSError: a tzdata folder ("Europe"),
            raise InvalidInputError(  # or a name longer than a file name can be
                "timezone",
                f"unknown time zone {timezone[:80]!r}" + ("..." if len(timezone) > 80 else ""),
                value=timezone,
                fix="use an IANA name such as 'Europe/Berlin' or 'UTC'",
            ) from e
        self._store: LedgerStore = (
            store if store is not None and not isinstance(store, str) else open_store(store)
        )
        if policy is not None and not isinstance(policy, BudgetPolicy):
            raise InvalidInputError("policy", "must be a BudgetPolicy", value=policy)
        try:  # a clock in milliseconds or nanoseconds reads a time with no date: refused here, once
            datetime.fromtimestamp(now, self._tz)
        except (OverflowError, ValueError, OSError) as e:
            raise clock_out_of_range(now) from e
        if on_unavailable not in ("closed", "open"):
            raise InvalidInputError(
                "on_unavailable", f"unknown value {on_unavailable!r}", fix="'closed' or 'open'"
            )
        if (
            isinstance(lease_seconds, bool)
            or not isinstance(lease_seconds, int | float)
            or not math.isfinite(lease_seconds)
            or lease_seconds <= 0
            or lease_seconds > MAX_LEASE_SECONDS
        ):
            raise InvalidInputError(
                "lease_seconds",
                f"must be a positive number of seconds, at most {MAX_LEASE_SECONDS:,} (a week)",
                value=lease_seconds,
                fix="a lease a little longer than your slowest call (default 600); "
                "settle or release reservations rather than leasing them for ever",
            )
        self.on_unavailable: OnUnavailable = on_unavailable
        self.lease_ms = int(lease_seconds * 1000)
        if spool_path is not None and (
            not isinstance(spool_path, str | os.PathLike) or not os.fspath(spool_path).strip()
        ):
            raise InvalidInputError(
                "spool_path",
                "must be a file path",
                value=spool_path,
                fix="leave it out (None) for $TOKENBUDGET_SPOOL, else the default spool of the store",
            )
        # (read only when it would be used: not beside an explicit spool_path (a check()'s ledger
        # names its ledger's spool), nor for a memory store, never unreachable, which spools nothing)
        reads_env = spool_path is None and not isinstance(self.store, MemoryStore)
        from_env = spool_from_environment() if reads_env else None
        spool = spool_path or from_env or default_spool_path(self.store)
        self.books = store_digest(self.store)
        """Where this ledger's figures live: a short hash of its store's identity (a SQLite file by
        its resolved path, a Redis server, database and namespace, a memory store by the object).
        Ledgers with equal ``books`` charge the same figures: see :meth:`shares_books_with`."""
        self.spool = Spool(spool, owner=self.books)  # a shared spool: each line to its store
        problem = None if isinstance(self.store, MemoryStore) else self.spool.unwritable()
        if problem is not None:
            unwritable = f"the spool {str(self.spool.path)!r} cannot be written ({problem})"
            spool_fix = "pass spool_path= (or set $TOKENBUDGET_SPOOL) to a file in a writable directory"
            if on_unavailable == "open":
                # failing open promises the usage of calls let through goes to the spool: it must be writable
                raise InvalidInputError("spool_path", unwritable, value=str(self.spool.path), fix=spool_fix)
            # Failing closed, a commit the store cannot take (a call reserved before an outage,
            # committed during it) is spooled too: told now, not first when that usage is lost
            # (such a commit raises BudgetUnavailableError: its usage is not recorded). Not refused:
            # a fail-closed ledger (the default) stays usable on a read-only home.
            logger.warning(
                "%s: a commit the store cannot take (an outage while calls are in flight) will not be "
                "kept, its usage not recorded; %s",
                unwritable,
                spool_fix,
            )
        self.sinks = resolve_sinks(alerts)
        # (day, scope, metric, limit) of the budgets this ledger told refusing
        self._refusals_told: set[tuple[str, str, str, int]] = set()
        # day -> (scope, metric, limit, threshold) of the threshold alerts this ledger found marked
        # in the store (set by it or by another ledger): a budget past a threshold is not marked
        # again on every later commit of the day (the last two days kept, see _alert)
        self._alerts_marked: dict[str, set[tuple[str, str, int, float]]] = {}
        self._alerts_lock = threading.Lock()  # the memo's days are added and dropped by many threads
        self.registry = registry if registry is not None else default_registry()
        self.prices = prices
        self.clock = clock
        self._replay_lock = threading.Lock()
        self._next_spool_check = 0.0
        self._orphans: collections.deque[tuple[tuple[str, ...], str, bool]] = collections.deque(maxlen=10_000)
        # Of those waiting, the ids a reserve under them takes back (False), and the ones whose
        # soft refusal is still to be forgotten (True: a retry finds the refused hold until then)
        self._orphan_ids: dict[str, bool] = {}
        self._orphan_lock = threading.Lock()  # the two above change together
        # A child forked while a thread replays (or orphans) gets new locks: that thread is not in it
        fresh_locks_after_fork(self, "_replay_lock", "_orphan_lock")
        self._orphans_dropped = 0  # releases dropped for room since the waiting ones were last released
        # A batch's commits to spool (see _many): written together, with one fsync, per thread
        self._batch = threading.local()
        # The latest reservations made under callers' ids, by id, in two generations (at least
        # _GRANTED_KEPT kept): a reserve retried while its reservation is live gets it back (_retried)
        self._granted: dict[str, Reservation] = {}
        self._granted_before: dict[str, Reservation] = {}
        # Reserves under callers' ids whose answer was lost (the store may hold them): a retry of
        # the same call gets its reservation, its ladder step read from the store then (_retried)
        self._lost: dict[str, Reservation] = {}
        self._day_cache: tuple[int, str] = (-(2**62), "")
        self._lanes: dict[tuple[str, str | None, str | None], _Lane] = {}  # the memory store's lane
        # model name -> its attribution rows' model, for the registry and price table (and their
        # versions) it was worked out with
        self._model_keys: tuple[object, object, int, PriceTable, int, dict[str, str]] = (
            None, None, -1, PriceTable(), -1, {}
        )  # fmt: skip
        self._inline = isinstance(self.store, MemoryStore)
        # The in-process store's fast path: the same operations on tuples, no request objects.
        self._memory = self.store if type(self.store) is MemoryStore else None
        # Redis's: the lane's reserve and commit in one script call each, from tuples.
        self._keyed = self.store if type(self.store) is RedisStore else None
        # The store sets a conversation's once-mark in the commit's own atomic step.
        self._commit_marks = commits_conversation_marks(self.store)
        self.policy = policy if policy is not None else BudgetPolicy()

    @property
    def policy(self) -> BudgetPolicy:
        """The limits. Assigning a new policy (a reloaded ``budgets.toml``) applies it to the next
        call; reservations already held keep what they reserved. A limit it changes alerts again
        that day, at its own thresholds (alerts fire once per budget, limit and day).

        Raises:
            InvalidInputError: On assignment, not a :class:`~tokenbudget_core.budgets.BudgetPolicy`.
        """
        return self._caches[0]

    @policy.setter
    def policy(self, policy: BudgetPolicy) -> None:
        if not isinstance(policy, BudgetPolicy):
            raise InvalidInputError("policy", "must be a BudgetPolicy", value=policy)
        # What the hot path reads of the policy, worked out again from the new one. The policy,
        # its ladder's rules and its caches are swapped as one value, read once per call: a call
        # that read the old policy caches what it worked out in the old caches (dropped), never in
        # the new ones, and never mixes the old ladder with the new refusal rule.
        ladder = policy.ladder
        rules = _LadderRules(
            tuple(  # the ladder's thresholds in order, for the hot path (see _ladder_step)
                (threshold, name)
                for name in _LADDER_STEPS
                if (threshold := getattr(ladder, name)) is not None
            ),
            # Steps at which a reservation is given back and refused: cache-only (no call goes out:
            # only caches answer) and a soft refusal, and with either configured also a call that
            # fills a budget to exactly 100% (past their thresholds).
            _refused_steps(ladder),
            min(policy.alert_thresholds, default=2.0),
        )
        self._caches: _Caches = (policy, {}, {}, rules)
        self._checker: tuple[tuple[Any, ...], Ledger] | None = None

    # -- time and scopes --------------------------------------------------------------------------

    @property
    def store(self) -> LedgerStore:
        """Where the figures live (``store=``). Fixed for the ledger's life: its fast paths, its
        books (:meth:`shares_books_with`), spool and alert memo are of this store.

        Raises:
            InvalidInputError: On assignment (make a new ``Ledger`` on the other store).
        """
        return self._store

    @store.setter
    def store(self, store: object) -> None:
        raise InvalidInputError(
            "store",
            "cannot be reassigned: the ledger's fast paths, books, spool and alert memo are of the "
            "store it was made with",
            value=store,
            fix="make a new Ledger on the other store (Ledger(store, policy=ledger.policy, ...))",
        )

    @property
    def tz(self) -> ZoneInfo:
        """The time zone that decides when a ledger day starts (``timezone=``). Assigning another
        :class:`~zoneinfo.ZoneInfo` applies it to the next call (and to :meth:`check`).

        Raises:
            InvalidInputError: On assignment, not a :class:`~zoneinfo.ZoneInfo`.
        """
        return self._tz

    @tz.setter
    def tz(self, tz: ZoneInfo) -> None:
        if not isinstance(tz, ZoneInfo) or not isinstance(tz.key, str):
            raise InvalidInputError(
                "tz",
                "must be a zoneinfo.ZoneInfo of an IANA name (one loaded from a file has none)",
                value=tz,
                fix="ZoneInfo('Europe/Berlin')",
            )
        self._tz = tz
        self._day_cache = (-(2**62), "")  # the day of a second in the old zone

    def _now_ms(self) -> int:
        """The clock's reading in epoch milliseconds (a reading with no date: a named error)."""
        now = self.clock()
        try:
            return int(now * 1000)
        except (OverflowError, ValueError, TypeError):  # inf, NaN, not a number
            raise clock_out_of_range(now) from None

    def shares_books_with(self, other: object) -> bool:
        """Whether ``other`` is a ledger charging the same figures as this one: this very object,
        or another on the same store (two ``Ledger(url)`` of one SQLite file, however the path is
        spelled; one Redis server, database and namespace; one ``MemoryStore`` object). Adapters
        seeing one call through handlers of both charge it once. Policies may differ: each gates
        the calls charged through it."""
        return other is self or (isinstance(other, Ledger) and other.books == self.books)

    def day(self, at: float | datetime | None = None) -> str:
        """The ledger day (ISO date in the ledger's time zone) of ``at`` (epoch seconds or an aware
        datetime; default now).

        Raises:
            InvalidInputError: ``at`` is not a time, or has no date in the ledger's time zone.
        """
        if at is None:
            return self._day_of(self.clock())
        return self._day_at("at", at, future=True)

    def _instant(self, field: str, at: float | datetime, *, future: bool = False) -> float:
        """``at`` (epoch seconds or an aware datetime) as epoch seconds, not in the future.

        Raises:
            InvalidInputError: Not a time, a naive datetime, or (unless ``future``) later than
                now (5 minutes of clock skew allowed).
        """
        if isinstance(at, datetime):
            if at.tzinfo is None or at.utcoffset() is None:
                raise InvalidInputError(field, "must have a time zone", value=at, fix="datetime.now(UTC)")
            try:
                seconds = at.timestamp()
            except (OverflowError, ValueError, OSError) as e:  # an instant before year 1 in UTC
                raise _out_of_range(field, at) from e
        elif isinstance(at, int | float) and not isinstance(at, bool) and math.isfinite(at):
            seconds = float(at)
        else:
            raise InvalidInputError(field, "must be epoch seconds or a datetime", value=at)
        if not future and seconds > self.clock() + 300:
            raise InvalidInputError(field, "is in the future", value=at, fix="pass when the call happened")
        return seconds

    def _day_at(self, field: str, at: float | datetime, *, future: bool = False) -> str:
        """The ledger day of ``at`` (see :meth:`_instant`).

        Raises:
            InvalidInputError: As :meth:`_instant`, or ``at`` has no date in the ledger's time zone.
        """
        seconds = self._instant(field, at, future=future)
        try:
            return datetime.fromtimestamp(seconds, self.tz).date().isoformat()
        except (OverflowError, ValueError, OSError) as e:  # before year 1 (or after 9999) here
            raise _out_of_range(field, at) from e

    def _day_of(self, at: float) -> str:
        """The ledger day of ``at``, a reading of the clock.

        Raises:
            InvalidInputError: ``clock`` read a time with no calendar date (it went out of range).
        """
        try:
            second = int(at // 1)  # days start on whole seconds in every zone: cache one second's answer
            cached = self._day_cache
            if cached[0] == second:
                return cached[1]
            day = datetime.fromtimestamp(at, self._tz).date().isoformat()
        except (OverflowError, ValueError, OSError, TypeError) as e:
            raise clock_out_of_range(at) from e
        self._day_cache = (second, day)
        return day

    @staticmethod
    def _limits_of(
        p: BudgetPolicy, cache: dict[str | None, tuple[int | None, ...]], feature: str | None
    ) -> tuple[int | None, ...]:
        """The limits ``p`` sets for ``feature``, money already in nano-USD (cached per feature)."""
        limits = cache.get(feature)
        if limits is None:
            fb = p.feature(feature)

            def n(usd: Decimal | None) -> int | None:
                return None if usd is None else usd_to_nanos(usd)

            limits = (
                fb.user_daily_tokens, n(fb.user_daily_usd), n(fb.feature_daily_usd), n(p.daily_usd),
                p.user_daily_tokens, n(p.user_daily_usd),
            )  # fmt: skip
            cache[feature] = limits
        return limits

    def _scopes_of(self, feature: str | None, user: str | None) -> _Scopes:
        """The budgets a payer's calls touch, with their limits (cached per feature and user)."""
        policy, limits_cache, cache, _ = self._caches  # one read: the policy and its own caches
        found = cache.get((feature, user))
        if found is not None:
            return found
        user_tokens, user_usd, feature_usd, daily_usd, all_user_tokens, all_user_usd = self._limits_of(
            policy, limits_cache, feature
        )
        f, u = _enc(feature), _enc(user)
        budgets: list[tuple[str, Metric, int | None]] = [
            (f"u/{f}/{u}", "tokens", user_tokens),
            (f"u/{f}/{u}", "nanos", user_usd),
            (f"f/{f}", "nanos", feature_usd),
            ("g", "nanos", daily_usd),
            # kept with no limit too, so a limit set later in the day counts the day's earlier
            # spend, as the per-feature ones do (no user: the anonymous payer)
            (f"U/{u}", "tokens", all_user_tokens),
            (f"U/{u}", "nanos", all_user_usd),
        ]
        found = _Scopes(
            budgets=tuple(budgets),
            keys=tuple([(scope, metric) for scope, metric, _ in budgets]),
            limits=tuple([limit for _, _, limit in budgets]),
            tokens_at=tuple([metric == "tokens" for _, metric, _ in budgets]),
            money_limited=any(m == "nanos" and limit is not None for _, m, limit in budgets),
            limited=any(limit for _, _, limit in budgets),
            rollup_prefix=f"{f}/{u}/",
        )
        if len(cache) >= 65_536:  # many users: start over rather than grow without end
            cache.clear()
        cache[(feature, user)] = found
        return found

    def _checks(self, feature: str | None, user: str | None, tokens: int, nanos: int) -> tuple[Check, ...]:
        scopes = self._scopes_of(feature, user)
        return scopes.checks(scopes.amounts(tokens, nanos))

    @staticmethod
    def _budget_name(check: Check) -> str:
        return _NAMES.get((check.scope.split("/", 1)[0], check.metric), check.scope)

    @staticmethod
    def _scope_text(feature: str | None, user: str | None) -> str:
        return f"feature={feature or '-'} user={user or '-'}"

    @classmethod
    def _budget_scope_text(cls, check: Check, feature: str | None, user: str | None) -> str:
        """Whose budget ``check`` is, for an alert: everyone's, a feature's, a user's in every
        feature, or a user's in one feature (never the user who happened to cross a shared one)."""
        kind = check.scope.split("/", 1)[0]
        if kind == "g":
            return "all calls"
        if kind == "f":
            return f"feature={feature or '-'}"
        if kind == "U":
            return f"user={user or '-'} (all features)"
        return cls._scope_text(feature, user)

    def _price_nanos(self, usage: Usage, model: str, *, round_up: bool, minute: int) -> int | None:
        """``usage`` on ``model`` in nano-USD at the prices of ``minute`` (epoch minutes: when the
        usage happened, by the ledger's clock or a record's ``at``); ``None`` when unpriced."""
        return cost_nanos(
            model,
            usage.input_tokens,
            usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            cache_write_1h_tokens=usage.cache_write_1h_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            requests=usage.requests,
            round_up=round_up,
            registry=self.registry,
            prices=self.prices,
            minute=minute,
        )

    def _model_info(self, model: str) -> ModelInfo | None:
        """The registry's entry for ``model``; ``None`` for a name only the ledger's price table
        knows (a :func:`~tokenbudget_core.price_overrides.register_price` override makes its exact
        name priceable, as :func:`~tokenbudget_core.pricing.cost_of` prices it).

        Raises:
            UnknownModelError: Neither the registry nor an override knows ``model``.
        """
        try:
            return self.registry.get(model)
        except UnknownModelError:
            table = self.prices if self.prices is not None else default_price_table()
            if type(model) is str and model in table:
                return None
            raise

    def _model_key(self, model: str) -> str:
        """The model ``model``'s usage is attributed to, encoded for a rollup key: the registry's
        name for it (:func:`~tokenbudget_core.ledger_records.attribution_model`), remembered per
        name until the registry or the price table changes."""
        memo = self._model_keys
        registry = self.registry
        if (
            memo[0] is registry
            and memo[1] is self.prices
            and memo[2] == registry.version
            and memo[4] == memo[3].version
        ):
            key = memo[5].get(model)
            if key is not None:
                return key
        return self._new_model_key(model)

    def _new_model_key(self, model: str) -> str:
        """:meth:`_model_key` worked out (and remembered, with what it depends on)."""
        registry, prices = self.registry, self.prices
        table = prices if prices is not None else default_price_table()
        memo = self._model_keys
        if not (
            memo[0] is registry and memo[1] is prices and memo[2] == registry.version and memo[3] is table
            and memo[4] == table.version
        ):  # fmt: skip
            memo = self._model_keys = (registry, prices, registry.version, table, table.version, {})
        keys = memo[5]
        key = _enc(attribution_model(registry, model, table))
        if len(keys) >= 65_536:  # many names: start over rather than grow without end
            keys.clear()
        keys[model] = key
        return key

    # -- the store, with fail-open/closed and the spool ------------------------------------------

    def _store_call(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            result = fn(*args)
        except BudgetUnavailableError:
            raise
        except OSError as e:  # a backend that leaked a raw connection error
            raise BudgetUnavailableError(redact_url(self.store.url), str(e)) from e
        self._replay_due()
        return result

    def _store_reserve(self, req: ReserveRequest) -> ReserveOutcome:
        return self._store_call(self.store.reserve, req)

    def _store_commit(self, req: CommitRequest) -> CommitOutcome:
        return self._store_call(self.store.commit, req)

    def _replay_due(self) -> None:
        """Replay the spool (and release orphaned reservations) if it is time to look again.

        Catch-up work on the time of a call whose own operation succeeded: nothing failing here
        raises into that call (its reservation or charge stands; a caller would take it for one
        not made). A store still away waits for the next look; anything else is logged.
        """
        now = time.monotonic()
        if now >= self._next_spool_check and self._replay_lock.acquire(blocking=False):
            self._next_spool_check = now + 1.0  # a stat per second at most, not one per call
            try:
                if self._orphans:
                    try:
                        self._release_orphans()
                    except Exception:  # the caller's own operation succeeded
                        logger.exception("releasing abandoned reservations failed (retried at the next look)")
                try:
                    if self.spool.pending():  # a long outage's spool: a share a look, not all on one call
                        self.spool.replay(self.store, on_applied=self._replayed, most=_SPOOL_LINES_PER_LOOK)
                except BudgetUnavailableError:
                    pass  # still away: the lines wait in the spool for the next look
                except Exception:  # (the spool's file, say) the caller's own operation succeeded
                    logger.exception(
                        "replaying the spool %s failed (retried at the next look)", self.spool.path
                    )
            finally:
                self._replay_lock.release()

    def abandon(self, request_id: str) -> None:
        """Give up a reserve under ``request_id`` that failed with ``BudgetUnavailableError`` and
        will not be retried under that id (an adapter whose ids are its runs').

        The store may have run the request with its answer lost, holding the call's worst case
        for a whole lease; the id is released once the store answers again, on today and on
        each earlier day the reserve may have been made on (within a lease; so an id must not
        name another call still open on one of those days). A reserve under an id the ledger
        drew itself is abandoned this way on its own.

        Raises:
            InvalidInputError: ``request_id`` is not a non-empty string id.
        """
        if not isinstance(request_id, str) or not request_id:
            raise InvalidInputError("request_id", "must be a non-empty string id", value=request_id)
        _check_ids(request_id=request_id)
        now, lease_s = self.clock(), self.lease_ms / 1000
        starts = [now - lease_s + k * 43_200 for k in range(int(lease_s // 43_200) + 1)]  # twice a day
        days = tuple(dict.fromkeys([*map(self._day_of, starts), self._day_of(now)]))
        self._orphan(days, request_id)

    def _orphan(self, day: str | tuple[str, ...], request_id: str, *, forget: bool = False) -> None:
        """Release ``request_id`` on ``day`` (or each of several days) once the store answers
        (``forget``: and forget it, see
        :meth:`LedgerStore.release <tokenbudget_core.stores.base.LedgerStore.release>`).

        At most ``_orphans.maxlen`` wait (a long outage): the oldest is then dropped, its hold
        left to its lease's end, and the drops logged."""
        with self._orphan_lock:
            orphans = self._orphans
            if len(orphans) == orphans.maxlen:
                dropped = orphans.popleft()[1]
                if dropped != request_id:
                    self._orphan_ids.pop(dropped, None)
                self._orphans_dropped += 1
                if self._orphans_dropped == 1:
                    logger.warning(
                        "the store has been unreachable for %d reservations waiting to be released: "
                        "the oldest are dropped, their holds left until their leases end",
                        orphans.maxlen,
                    )
            self._orphan_ids[request_id] = forget
            orphans.append(((day,) if isinstance(day, str) else day, request_id, forget))

    def _release_orphans(self) -> None:
        """Release the reservations whose reserve failed closed or whose release could not reach
        the store (lock held).

        A reserve whose answer was lost (the store stalled past its timeout) may still have run on
        the store, holding the worst case for a whole lease with no reservation anyone could
        release. Releasing its id once the store answers again gives that back; if the request
        never ran, the release marks the id released, so a late-running request holds nothing
        either. Of failed reserves, only ids the ledger drew itself: a caller may retry its own id.

        At most :data:`_ORPHANS_PER_LOOK` per look (one a second at most, on the thread of a
        call that reached the store): after a long outage, the releases are spread over the next
        calls rather than all made on the first one's time.
        """
        for _ in range(_ORPHANS_PER_LOOK):
            if not self._orphans:
                break
            try:
                days, rid, forget = self._orphans[0]
            except IndexError:  # dropped for room meanwhile
                break
            if rid in self._orphan_ids:  # else reserved again since: that reservation is the caller's
                try:
                    for day in days:
                        self.store.release(day, rid, self._now_ms(), forget=forget)
                except (BudgetUnavailableError, OSError):
                    return  # still down: try again at the next look
                except Exception as e:  # noqa: BLE001 - logged: never raised into the caller
                    if isinstance(e, StoreRefusedError) and e.retry_later:
                        return  # the store's credentials or ACL: fixed, it takes the release
                    # refused for good (another application's data under a key): dropped, so that
                    # it holds up neither the releases after it nor the spool's replay
                    logger.warning(
                        "the release of abandoned request %r failed (%s: %s): dropped, its hold "
                        "(if the reserve ran) is left until its lease ends",
                        rid,
                        type(e).__name__,
                        e,
                    )
            with self._orphan_lock:
                if self._orphans and self._orphans[0][1] == rid:  # else dropped for room meanwhile
                    self._orphans.popleft()
                self._orphan_ids.pop(rid, None)
        if self._orphans_dropped:
            logger.warning(
                "the store answers again: %d reservation releases were dropped while it was "
                "unreachable (their holds end with their leases)",
                self._orphans_dropped,
            )
            self._orphans_dropped = 0

    def catch_up(self) -> None:
        """Replay a share of the spool and release orphaned reservations, if it is time to look
        again (once a second at most), as every store call of this ledger does: for code that
        reads the store directly (reports), so that usage spooled during an outage shows once
        the store is back even when no call is made."""
        self._replay_due()

    def probe(self) -> None:
        """Check that the store answers *and takes writes* (a Redis at ``maxmemory`` answers a
        ping yet refuses every reservation), then :meth:`catch_up`. For health checks.

        Raises:
            BudgetUnavailableError: The store cannot be reached or takes no writes.
            StoreRefusedError: The store refuses this ledger (credentials, another schema).
        """
        self.store.ping()
        self.store.mark_once("health/probe", 1)
        self.catch_up()

    def replay_spool(self) -> int:
        """Commit the spooled usage now (after a replay another process has under way); returns
        how many commits were applied."""
        with self._replay_lock:
            return self.spool.replay(self.store, wait=True, on_applied=self._replayed)

    def _replayed(self, req: CommitRequest, outcome: CommitOutcome) -> None:
        """What follows a commit the store applied on a spool replay, as it follows any applied
        commit: a batch's per-call cost samples, and the threshold alerts of its payer's budgets."""
        rollup = req.rollup
        requests = rollup.get("requests", 1)
        if requests != 1:  # the samples the commit left to the ledger, told by its counters
            feature_key = req.rollup_key.split("/", 1)[0]
            priced, overhead = not rollup.get("unpriced"), bool(rollup.get("overhead_requests"))
            hit = bool(rollup.get("cache_hits"))
            per_call_key = _sample_keys(feature_key, priced, overhead, requests, hit)[1]
            if per_call_key is not None:
                self._record_per_call(req.day, per_call_key, rollup.get("cost_nanos", 0), requests)
        feature, user = _payer_of_row(req.rollup_key)
        scopes = self._scopes_of(feature, user)
        reported = {(c.scope, c.metric): used for c, used in zip(req.charges, outcome.spent, strict=False)}
        spent = [
            reported[(scope, metric)] for scope, metric, _ in scopes.budgets if (scope, metric) in reported
        ]
        with contextlib.suppress(BudgetUnavailableError):  # budgets added since: read from the store
            self._threshold_alerts(req.day, feature, user, scopes, req.now_ms, spent)

    # -- reserve / commit / release ---------------------------------------------------------------

    def reserve(
        self,
        *,
        model: str,
        input_tokens: int,
        max_output_tokens: int | None = None,
        feature: str | None = None,
        user: str | None = None,
        conversation: str | None = None,
        request_id: str | None = None,
        choices: int = 1,
        cache_writes: Literal["5m", "1h"] | None = None,
    ) -> Reservation:
        """Reserve the worst case of a call against every budget it touches, atomically.

        An enclosing :func:`~tokenbudget_core.attribute` block's feature, user and conversation win
        over these arguments (the outermost payer pays, whatever a helper inside passes); an
        argument counts only where no block sets that id.
        ``choices`` is how many completions the call asks for (OpenAI's ``n``): the input is
        billed once, the output up to ``max_output_tokens`` per choice, so the worst case
        reserves ``choices * max_output_tokens`` output tokens (per-call output limits apply
        to each choice). With no ``max_output_tokens`` the worst case is the feature's
        ``max_output_tokens_per_call`` or the model's own output limit, whichever is smaller.
        ``cache_writes`` (``"5m"`` or ``"1h"``) says the call carries
        prompt-cache markers (Anthropic's ``cache_control``, see
        :func:`~tokenbudget_core.prompt_caching.cache_writes_of`): a cache write costs more than
        plain input, so the worst case prices every input token at that write rate.

        Raises:
            BudgetExceededError: A budget (or a per-call limit) would be exceeded, or the ladder
                reached a soft refusal; the call must not go out. Nothing is held for it, and its
                request id is free: a retry under it is a new reservation (an id reserved before
                and still live keeps that reservation, its maker's to settle).
            BudgetUnavailableError: The store is down and the ledger fails closed.
            UnpricedModelError: The model has no price and a dollar budget applies.
            InvalidInputError: A bad argument, named; or ``request_id`` was already committed,
                released or expired (a reserve retried while its reservation is live returns it
                again), or is live under a different call (another worst case: a fresh id per call).
        """
        memory = self._memory
        # (``type is int``: True, 1.0 and Decimal(1) equal 1 but are no count, refused by the plan)
        if (
            type(choices) is int
            and choices == 1
            and cache_writes is None
            and (memory is not None or self._keyed is not None)
        ):
            found = self._lane_reserve(
                memory, model, input_tokens, max_output_tokens, feature, user, conversation, request_id
            )
            if found is not None:
                return found
        plan = self._reserve_plan(
            model, input_tokens, max_output_tokens, feature, user, conversation, request_id, choices,
            cache_writes,
        )  # fmt: skip
        if memory is not None:  # no store round trip: no steps to drive
            return self._reserve_in_memory(plan, memory)
        return _drive(self._reserve_driven(plan), self._store_reserve)

    def reserve_many(self, calls: Sequence[Mapping[str, Any]]) -> list[Reservation | Exception]:
        """Reserve several calls with few store round trips (on Redis, one pipeline per 500 calls).

        Each call is reserved on its own, atomically, exactly as :meth:`reserve` would (they are
        checked in order, so a later call sees the earlier ones' reservations); only the round
        trips are shared. For a server that handles many requests at once.

        Args:
            calls: The keyword arguments of :meth:`reserve`, one mapping per call.

        Returns:
            Per call, its :class:`Reservation` or the error :meth:`reserve` would have raised
            (``BudgetExceededError``, ``BudgetUnavailableError``...): one refusal or failure
            never affects the others. A request id that an earlier call of the batch names is
            an ``InvalidInputError`` (the store answers all of them before any is settled: the
            later one could not be told from a retry of the earlier).

        Raises:
            InvalidInputError: ``calls`` is not a list of calls (a string, bytes, a dict, a set,
                ``None``, a number...), named ``calls``: before any call is looked at.
        """
        steps = []
        named: dict[object, int] = {}  # request id -> the first call naming it
        for i, call in enumerate(_batch("calls", calls, "mappings of reserve() arguments")):
            rid = call.get("request_id") if isinstance(call, Mapping) else None
            if isinstance(rid, str) and named.setdefault(rid, i) != i:
                repeated = InvalidInputError(
                    f"calls[{i}].request_id",
                    f"repeats calls[{named[rid]}]'s id {rid!r}",
                    value=rid,
                    fix="one request id per call of a batch (retry a call in a batch of its own)",
                )
                steps.append(_failing(repeated))
            elif not isinstance(call, Mapping) or not _REQUIRED_ARGS <= set(call) <= _RESERVE_ARGS:
                names = set(call) if isinstance(call, Mapping) else set()
                wrong = sorted(map(str, names - _RESERVE_ARGS)) + sorted(_REQUIRED_ARGS - names)
                error = InvalidInputError(
                    f"calls[{i}]",
                    "must be a mapping of reserve() arguments"
                    + (f" (unknown or missing: {', '.join(wrong)})" if names else ""),
                    fix=f"keys: model, input_tokens, optional {_OPTIONAL_ARGS}",
                )
                steps.append(_failing(error))
            else:
                steps.append(self._reserve_steps(**call))
        return self._many(steps, "reserve_many", "reserve")

    def _reserve_steps(
        self,
        *,
        model: str,
        input_tokens: int,
        max_output_tokens: int | None = None,
        feature: str | None = None,
        user: str | None = None,
        conversation: str | None = None,
        request_id: str | None = None,
        choices: int = 1,
        cache_writes: Literal["5m", "1h"] | None = None,
    ) -> Generator[ReserveRequest, ReserveOutcome, Reservation]:
        """:meth:`reserve`, yielding its store request (unless the memory store's fast path takes it)."""
        plan = self._reserve_plan(
            model, input_tokens, max_output_tokens, feature, user, conversation, request_id, choices,
            cache_writes,
        )  # fmt: skip
        if self._memory is not None:
            return self._reserve_in_memory(plan, self._memory)
        return (yield from self._reserve_driven(plan))

    def _reserve_plan(
        self,
        model: str,
        input_tokens: int,
        max_output_tokens: int | None,
        feature: str | None,
        user: str | None,
        conversation: str | None,
        request_id: str | None,
        choices: int = 1,
        cache_writes: Literal["5m", "1h"] | None = None,
    ) -> _ReservePlan:
        """What :meth:`reserve` asks the store: the payer, the worst case and its checks.

        Raises:
            BudgetExceededError: A per-call limit is exceeded.
            UnpricedModelError: The model has no price and a dollar budget applies.
            InvalidInputError: A bad argument, named.
        """
        if not (
            (feature is None or (type(feature) is str and feature))
            and (user is None or (type(user) is str and user))
            and (conversation is None or type(conversation) is str)
            and (request_id is None or (type(request_id) is str and request_id))
        ) or _unencodable(feature, user, conversation, request_id):
            _check_ids(feature=feature, user=user, conversation=conversation, request_id=request_id)
        if request_id is not None and self._orphan_ids.get(request_id) is False:
            self._orphan_ids.pop(request_id, None)  # retried: whatever the id holds is this reserve's
        ctx = current_attribution()
        feature, user = ctx.feature or feature, ctx.user or user
        conversation = ctx.conversation or conversation
        if not (
            type(input_tokens) is int
            and 0 <= input_tokens <= _MAX_AMOUNT
            and (
                max_output_tokens is None
                or (type(max_output_tokens) is int and 0 <= max_output_tokens <= _MAX_AMOUNT)
            )
        ):
            if input_tokens is None:
                raise InvalidInputError("input_tokens", "must be a non-negative integer", value=None)
            for field, value in (("input_tokens", input_tokens), ("max_output_tokens", max_output_tokens)):
                if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                    raise InvalidInputError(field, "must be a non-negative integer", value=value)
                if value is not None and value > _MAX_AMOUNT:
                    raise _too_large(field, f"is {value:,} tokens", value)
            # int subclasses (a counter's TokenCount) are stored as plain ints by every store
            input_tokens = int(input_tokens)
            max_output_tokens = None if max_output_tokens is None else int(max_output_tokens)
        info = self._model_info(model)
        fb = self.policy.feature(feature)
        if fb.max_input_tokens_per_call is not None and input_tokens > fb.max_input_tokens_per_call:
            raise BudgetExceededError(
                budget="max_input_tokens_per_call",
                scope=self._scope_text(feature, user),
                limit=fb.max_input_tokens_per_call,
                used=0,
                requested=input_tokens,
            )
        out = max_output_tokens
        if out is None:
            out = _default_output(
                fb.max_output_tokens_per_call, None if info is None else info.max_output_tokens
            )
        if out is None:
            raise InvalidInputError(
                "max_output_tokens",
                f"{model!r} has no known output limit (the registry has none, nor the feature's "
                "max_output_tokens_per_call)",
                fix="pass max_output_tokens= to reserve() / check(), or to the handler or middleware "
                "that reserves (BudgetCallbackHandler(..., max_output_tokens=...)), or set the "
                "feature's max_output_tokens_per_call",
            )
        if fb.max_output_tokens_per_call is not None and out > fb.max_output_tokens_per_call:
            raise BudgetExceededError(
                budget="max_output_tokens_per_call",
                scope=self._scope_text(feature, user),
                limit=fb.max_output_tokens_per_call,
                used=0,
                requested=out,
            )
        if not (type(choices) is int and choices == 1):  # (True, 1.0, Decimal(1) equal 1: checked too)
            if isinstance(choices, bool) or not isinstance(choices, int) or choices < 1:
                raise InvalidInputError(
                    "choices", "must be a positive integer (completions the call asks for)", value=choices
                )
            out *= int(choices)
        now = self.clock()
        day = self._day_of(now)  # (a reading with no date: its named error, before any pricing)
        minute = int(now // 60)  # priced at the ledger's now: prices change by the hour and date
        if cache_writes is None:
            nanos = cost_nanos(
                model, input_tokens, out, round_up=True, registry=self.registry, prices=self.prices,
                minute=minute,
            )  # fmt: skip
        else:
            if cache_writes not in ("5m", "1h"):
                raise InvalidInputError(
                    "cache_writes", f"unknown value {cache_writes!r}", fix="use '5m', '1h' or None"
                )
            nanos = cost_nanos(
                model, input_tokens, out, round_up=True, registry=self.registry, prices=self.prices,
                cache_write_tokens=input_tokens,
                cache_write_1h_tokens=input_tokens if cache_writes == "1h" else 0, minute=minute,
            )  # fmt: skip
        scopes = self._scopes_of(feature, user)
        if nanos is None and scopes.money_limited:
            raise UnpricedModelError(model)
        tokens, amount = input_tokens + out, nanos or 0
        if tokens > _MAX_AMOUNT or amount > _MAX_AMOUNT:  # the worst case over every choice
            what = f"{tokens:,} tokens" if tokens > _MAX_AMOUNT else f"${nanos_to_usd(amount)}"
            raise _too_large("max_output_tokens", f"makes a worst case of {what}", max_output_tokens)
        amounts = scopes.amounts(tokens, amount)
        checks = scopes.checks(amounts)
        return _ReservePlan(
            request_id or new_request_id(), day, int(now * 1000), model, feature, user,
            conversation, ctx.overhead, input_tokens, out, nanos, checks, amounts, scopes,
            request_id is None, minute,
        )  # fmt: skip

    def _reserve_in_memory(self, plan: _ReservePlan, memory: MemoryStore) -> Reservation:
        """:meth:`reserve` on the in-process store: its tuple path, no request or outcome objects."""
        scopes = plan.scopes
        found = memory.reserve_cells(
            plan.day, plan.request_id, scopes.keys, memory.cells(plan.day, scopes.keys), plan.amounts,
            scopes.limits, plan.now_ms, self.lease_ms,
        )  # fmt: skip
        if isinstance(found, tuple):
            self._replay_due()
            return self._reserved(plan, _RESERVED, found)
        return self._reserved(plan, found, found.usage)

    # -- the memory store's lane ---------------------------------------------------------------
    # The common reserve and commit on the in-process store, from what a lane keeps per model and
    # payer: no plan, no request objects, the price and the day's cells read once. Anything the
    # lane does not cover (an error to raise, a refusal, an option it does not take) returns None
    # before touching the store, or goes through the general path's own steps after it: both
    # paths give the same answers (tests/unit/test_ledger_fast_paths.py).

    def _lane(self, model: str, feature: str | None, user: str | None, minute: int) -> _Lane | None:
        """The lane of ``model`` and the payer at ``minute`` (epoch minutes by the ledger's clock:
        prices change with the time of day and the date), built or refreshed; ``None`` when the
        general path must answer (an unknown model, ids to validate, tiered prices)."""
        lane = self._lanes.get((model, feature, user))
        if (
            lane is not None
            and lane.caches is self._caches
            and lane.minute == minute
            and lane.registry is self.registry
            and lane.registry_version == lane.registry.version
            and lane.prices is self.prices
            and lane.table_version == lane.table.version
        ):
            return lane
        if type(model) is not str or _unencodable(feature, user):
            return None
        caches = self._caches  # read first: a policy swapped meanwhile makes the lane stale, never wrong
        registry = self.registry
        registry_version = registry.version
        table = self.prices if self.prices is not None else default_price_table()
        try:
            info = registry.get(model)
            price = resolved_price(model, registry, table, minute)
        except UnknownModelError:
            return None
        if not (price is None or isinstance(price, tuple)):  # tiers: priced per call on the general path
            return None
        fb = caches[0].feature(feature)
        scopes = self._scopes_of(feature, user)
        lane = _Lane(
            caches, registry, registry_version, self.prices, table, minute, price, scopes,
            fb.max_input_tokens_per_call,
            fb.max_output_tokens_per_call,
            _default_output(fb.max_output_tokens_per_call, info.max_output_tokens),
            scopes.rollup_prefix + self._model_key(model), _enc(feature),
        )  # fmt: skip
        if len(self._lanes) >= 65_536:  # many payers: start over rather than grow without end
            self._lanes.clear()
        self._lanes[(model, feature, user)] = lane
        return lane

    def _lane_reserve(
        self,
        memory: MemoryStore | None,
        model: str,
        input_tokens: int,
        max_output_tokens: int | None,
        feature: str | None,
        user: str | None,
        conversation: str | None,
        request_id: str | None,
    ) -> Reservation | None:
        """:meth:`reserve` in the lane, on ``memory`` or (``None``) on Redis; ``None``: the general
        path answers (nothing was done)."""
        ctx = current_attribution()
        overhead = ctx.overhead
        # an attribute() block's ids win; arguments they replace are checked on the general path
        if ctx.feature is not None:
            if feature is not None:
                return None
            feature = ctx.feature
        if ctx.user is not None:
            if user is not None:
                return None
            user = ctx.user
        if ctx.conversation is not None:
            if conversation is not None:
                return None
            conversation = ctx.conversation
        if not (
            type(model) is str
            and (feature is None or (type(feature) is str and feature))  # "" refused on the general path
            and (user is None or (type(user) is str and user))
            and (conversation is None or (type(conversation) is str and conversation.isascii()))
            and (request_id is None or (type(request_id) is str and request_id.isascii() and request_id))
            and type(input_tokens) is int
            and 0 <= input_tokens <= _MAX_AMOUNT
            and (max_output_tokens is None or (type(max_output_tokens) is int and max_output_tokens >= 0))
        ):
            return None
        now = self.clock()
        day = self._day_of(now)  # (a reading with no date: its named error, here)
        lane = self._lane(model, feature, user, int(now // 60))  # priced at the ledger's now
        if lane is None:
            return None
        out = lane.default_output if max_output_tokens is None else max_output_tokens
        if (
            out is None
            or (lane.max_input is not None and input_tokens > lane.max_input)
            or (lane.max_output is not None and out > lane.max_output)
        ):
            return None
        scopes = lane.scopes
        nanos = scaled_cost(lane.price, input_tokens, out, 0, 0, 0, 0, 1, True)
        if nanos is None and scopes.money_limited:
            return None
        tokens, amount = input_tokens + out, nanos or 0
        if tokens > _MAX_AMOUNT or amount > _MAX_AMOUNT:
            return None
        amounts = scopes.amounts(tokens, amount)
        if request_id is not None and self._orphan_ids.get(request_id) is False:
            self._orphan_ids.pop(request_id, None)  # retried: whatever the id holds is this reserve's
        rid = request_id or new_request_id()
        now_ms = int(now * 1000)
        unavailable = None
        found: tuple[int, ...] | ReserveOutcome | None = None
        if memory is not None:
            held = lane.held
            if held[0] != day:
                held = lane.held = (day, memory.cells(day, scopes.keys))
            found = memory.reserve_cells(
                day, rid, scopes.keys, held[1], amounts, scopes.limits, now_ms, self.lease_ms
            )
            if self._orphans:  # abandoned ids wait for a store call (a memory store spools nothing)
                self._replay_due()
        else:
            assert self._keyed is not None
            try:
                found = self._store_call(
                    self._keyed.reserve_keyed, day, rid, scopes.keys, amounts, scopes.limits, now_ms,
                    self.lease_ms,
                )  # fmt: skip
            except BudgetUnavailableError as e:
                unavailable = e
        if isinstance(found, tuple):
            rules = cast(_Caches, lane.caches)[3]  # the policy the lane's limits are of
            step = self._ladder_step(found, scopes.limits, rules) if scopes.limited else "normal"
            if step not in rules.refused:
                r = _new_reservation(
                    rid, day, model, feature, user, conversation, overhead, input_tokens, out,
                    None if nanos is None else nanos_to_usd(nanos), step, False, (scopes.budgets, amounts),
                    lane.minute,
                )  # fmt: skip
                return r if request_id is None else self._keep(r)
        # refused, a duplicate, a soft refusal or an unreachable store: the general path's answer
        plan = _ReservePlan(
            rid, day, now_ms, model, feature, user, conversation, overhead, input_tokens, out, nanos,
            scopes.checks(amounts), amounts, scopes, request_id is None, lane.minute,
        )  # fmt: skip
        if found is None:
            unchecked = self._failed_open(plan, unavailable)
            if unchecked is None:
                assert unavailable is not None
                raise unavailable
            return unchecked
        if isinstance(found, tuple):
            return self._reserved(plan, _RESERVED, found)
        return self._reserved(plan, found, found.usage)

    def _lane_commit(self, memory: MemoryStore | None, r: Reservation, usage: Usage) -> Charge | None:
        """:meth:`commit` in the lane (one call, no overhead, no conversation to mark), on
        ``memory`` or (``None``) on Redis; ``None``: the general path answers (nothing was done)."""
        if (
            r.overhead is not None
            or r.conversation is not None
            or usage.requests != 1
            or type(r.model) is not str
            or not (r.feature is None or type(r.feature) is str)
            or not (r.user is None or type(r.user) is str)
        ):
            return None
        tokens = usage.input_tokens + usage.output_tokens
        if tokens >= _MAX_AMOUNT:
            return None
        now = self.clock()
        minute = r.priced_minute  # priced when the call landed, as its worst case was
        if type(minute) is not int:
            if minute is not None:  # a hand-made reservation: the general path names the problem
                return None
            try:  # made by hand: priced at the ledger's now (prices change by the hour)
                minute = int(now // 60)
            except (OverflowError, ValueError, TypeError):  # the general path names the clock's error
                return None
        lane = self._lane(r.model, r.feature, r.user, minute)
        if lane is None:
            return None
        nanos = scaled_cost(
            lane.price, usage.input_tokens, usage.output_tokens, usage.cache_read_tokens,
            usage.cache_write_tokens, usage.cache_write_1h_tokens, usage.reasoning_tokens, 1, False,
        )  # fmt: skip
        if nanos is None or nanos > _MAX_AMOUNT:
            return None
        scopes = lane.scopes
        day = r.day
        rollup = _call_rollup(usage, nanos)
        amounts = scopes.amounts(tokens, nanos)
        if memory is not None:
            held = lane.held
            cells = held[1] if held[0] == day else memory.cells(day, scopes.keys)
            applied, _, spent = memory.commit_cells(
                day, r.request_id, cells, amounts, lane.rollup_key, rollup, lane.cost_key
            )
            if self._orphans:
                self._replay_due()
        else:
            assert self._keyed is not None
            now_ms = int(now * 1000)  # the general path's plan reads it before the store call
            try:
                applied, _, spent = self._store_call(
                    self._keyed.commit_keyed, day, r.request_id, scopes.keys, amounts, lane.rollup_key,
                    rollup, lane.cost_key,
                )  # fmt: skip
            except (BudgetUnavailableError, StoreRefusedError) as e:
                plan = self._lane_commit_plan(r, usage, nanos, lane, tokens, rollup, now_ms)
                return self._spooled(plan, self._commit_request(plan), e)
        if not applied:  # the id was committed before: this commit charged nothing
            return _new_charge(r.request_id, usage, None, False, False, None)
        if self._alert_due(scopes, spent):
            plan = self._lane_commit_plan(r, usage, nanos, lane, tokens, rollup, self._now_ms())
            self._after_commit(plan, spent, record_cost=False)
        return _new_charge(r.request_id, usage, nanos_to_usd(nanos), True, False, None)

    @staticmethod
    def _lane_commit_plan(
        r: Reservation,
        usage: Usage,
        nanos: int,
        lane: _Lane,
        tokens: int,
        rollup: dict[str, int],
        now_ms: int,
    ) -> _CommitPlan:
        """The general path's plan of a lane commit (for what the lane leaves to it)."""
        return _CommitPlan(
            r.request_id, r.day, now_ms, r.feature, r.user, usage, nanos, nanos,
            lane.scopes, tokens, lane.rollup_key, rollup, lane.cost_key, None,
        )  # fmt: skip

    def _reserve_driven(self, plan: _ReservePlan) -> Generator[ReserveRequest, ReserveOutcome, Reservation]:
        """:meth:`reserve` on any store: yields the store request, fails open or closed."""
        req = _new_reserve_request(plan.day, plan.request_id, plan.checks, plan.now_ms, self.lease_ms)
        try:
            outcome = yield req
        except BudgetUnavailableError as e:
            unchecked = self._failed_open(plan, e)
            if unchecked is None:
                raise
            return unchecked
        return self._reserved(plan, outcome, outcome.usage)

    def _failed_open(
        self, plan: _ReservePlan, failed: BudgetUnavailableError | None = None
    ) -> Reservation | None:
        """The store was unreachable for ``plan``: an unchecked reservation when the ledger fails
        open; ``None`` when it fails closed (the caller raises), the id orphaned if it is the
        ledger's and the request may have run (``failed.sent`` is not ``False``)."""
        if not plan.own_id and (failed is None or failed.sent is not False):
            # its answer may be lost with the store holding it: a retry of this call under the id
            # gets this reservation (not a refusal for a hold it could not tell from another's)
            if len(self._lost) >= _GRANTED_KEPT:  # a long outage: start over, never grow without end
                self._lost.clear()
            self._lost[plan.request_id] = self._reservation(plan, "normal")
        if self.on_unavailable == "closed":
            if plan.own_id and (failed is None or failed.sent is not False):  # may have run: undo later
                self._orphan(plan.day, plan.request_id)
            return None
        return self._reservation(plan, "normal", unchecked=True)

    def _reservation(self, plan: _ReservePlan, step: Step, *, unchecked: bool = False) -> Reservation:
        nanos = plan.nanos
        return _new_reservation(
            plan.request_id, plan.day, plan.model, plan.feature, plan.user, plan.conversation,
            plan.overhead, plan.input_tokens, plan.max_output_tokens,
            None if nanos is None else nanos_to_usd(nanos), step, unchecked,
            (plan.scopes.budgets, plan.amounts), plan.minute,
        )  # fmt: skip

    def _reserved(self, plan: _ReservePlan, outcome: ReserveOutcome, usage: Sequence[int]) -> Reservation:
        """The reservation the store's ``outcome`` made (``usage``: its ``spent + reserved`` per check).

        Raises:
            BudgetExceededError: The store refused it, or the ladder reached a soft refusal.
            InvalidInputError: Its request id was already committed, released or expired.
        """
        checks = plan.checks
        if not outcome.ok:
            failed = outcome.failed
            assert failed is not None
            assert failed.limit is not None
            money = failed.metric == "nanos"
            self._refusing(plan.day, plan.feature, plan.user, failed, outcome.used)
            raise BudgetExceededError(
                budget=self._budget_name(failed),
                scope=self._scope_text(plan.feature, plan.user),
                limit=nanos_to_usd(failed.limit) if money else failed.limit,
                used=nanos_to_usd(outcome.used) if money else outcome.used,
                requested=nanos_to_usd(failed.amount) if money else failed.amount,
            )
        if outcome.duplicate and outcome.state == "reserved":  # a retried reserve of a live id
            return self._retried(plan)
        if outcome.duplicate:
            raise InvalidInputError(
                "request_id",
                f"{plan.request_id!r} was already {outcome.state or 'settled'} on {plan.day}: a reservation "
                "under it would hold nothing (a reserve that arrives after its release or commit must "
                "not hold budget)"
                + (", and its commit would be ignored" if outcome.state == "committed" else ""),
                value=plan.request_id,
                fix="use a fresh request id per call (or pass none: the ledger makes one)",
            )
        step: Step = "normal"
        rules = self._caches[3]  # read once: the step and the refusal by one ladder
        if plan.scopes.limited:
            if len(usage) == len(checks):  # the store reported usage: no extra round trip
                step = self._ladder_step(usage, plan.scopes.limits, rules)
            else:
                step = self._step(plan.day, checks, plan.now_ms, rules)
        reservation = self._reservation(plan, step)
        if step in rules.refused:
            # given back and forgotten: a retry under the id reserves anew
            stays = not self._release(reservation, forget=True) and plan.request_id in self._orphan_ids
            raise self._soft_refusal(
                plan.day, checks, plan.now_ms, plan.feature, plan.user, usage, step, own_hold=stays
            )
        return reservation if plan.own_id else self._keep(reservation)

    def _keep(self, reservation: Reservation) -> Reservation:
        """Remember ``reservation`` (made under a caller's id) for a retry of its reserve."""
        granted = self._granted
        granted[reservation.request_id] = reservation
        if len(granted) >= _GRANTED_KEPT:  # a new generation: the one before is forgotten
            self._granted_before, self._granted = granted, {}
        return reservation

    def _retried(self, plan: _ReservePlan) -> Reservation:
        """The answer to a reserve under an id whose reservation is live (the store held it
        before this call and checked nothing now).

        A retry of the call that made it gets that reservation again, its figures and step as
        first answered. Under a different call (another worst case) the id is refused: the hold
        was checked for the first call's worst case, never for this one. A reservation this
        ledger did not make (another process, or one too old to be remembered) cannot be compared:
        the call is then checked on top of the store's totals, which count that hold, and granted
        only when it fits next to it.

        Raises:
            BudgetExceededError: The id holds a soft-refused call whose hold could not be given
                back yet (refused again until it is).
            InvalidInputError: ``request_id`` holds another call's worst case, or one the call
                does not fit next to.
        """
        rid = plan.request_id
        lost = self._lost.pop(rid, None)
        held = self._granted.get(rid) or self._granted_before.get(rid) or lost
        if held is not None and held.day != plan.day:  # an id reused on another day: not this hold
            held = None
        if held is not None and held is lost and self._same_call(held, plan):
            return self._found(plan, held)
        if held is not None:
            if self._same_call(held, plan):
                return held
            raise InvalidInputError(
                "request_id",
                f"{rid!r} is already reserved with a different worst case ({held.model}, "
                f"{held.input_tokens} input + {held.max_output_tokens} output tokens, feature "
                f"{held.feature!r}, user {held.user!r}): a reserve under a live id is a retry of "
                "that call, and its hold was never checked for this one",
                value=rid,
                fix="use a fresh request id per call (or pass none: the ledger makes one)",
            )
        checks = plan.checks
        if self._orphan_ids.get(rid) is True:  # a refused call's hold, still to be given back
            raise self._soft_refusal(
                plan.day, checks, plan.now_ms, plan.feature, plan.user, step=self._held_step(plan)
            )  # fmt: skip
        totals = self.store.totals(plan.day, [(c.scope, c.metric) for c in checks], plan.now_ms)
        usage = [sum(totals[(c.scope, c.metric)]) + c.amount for c in checks]
        fits = all(c.limit is None or used <= c.limit for c, used in zip(checks, usage, strict=True))
        step: Step = "normal"
        rules = self._caches[3]
        if fits and plan.scopes.limited:
            step = self._ladder_step(usage, [c.limit for c in checks], rules)
        if not fits or step in rules.refused:
            raise InvalidInputError(
                "request_id",
                f"{rid!r} is already reserved, by a reserve this ledger cannot see (another process, "
                "or long ago): whether that hold covers this call is unknown, and the call does not "
                "fit next to it",
                value=rid,
                fix="use a fresh request id per call (or pass none: the ledger makes one)",
            )
        return self._keep(self._reservation(plan, step))

    def _held_step(self, plan: _ReservePlan) -> Step:
        """The refusing step of a call whose refused hold is still in the store (the hold is the
        call, counted once): the step the ladder gives the totals, the top refusing one when that
        is not a refusing step (a hold given back meanwhile) or the store cannot be read."""
        rules = self._caches[3]
        checks = plan.checks
        try:
            totals = self.store.totals(plan.day, [(c.scope, c.metric) for c in checks], plan.now_ms)
        except (BudgetUnavailableError, StoreRefusedError, OSError):
            return rules.top_refusal
        usage = [sum(totals[(c.scope, c.metric)]) for c in checks]
        step = self._ladder_step(usage, [c.limit for c in checks], rules)
        return step if step in rules.refused and step != "hard_refusal" else rules.top_refusal

    @staticmethod
    def _same_call(held: Reservation, plan: _ReservePlan) -> bool:
        """Whether ``plan`` reserves the same call as ``held`` (its model, payer and worst case)."""
        nanos = plan.nanos
        return (held.model, held.feature, held.user, held.input_tokens, held.max_output_tokens) == (
            plan.model, plan.feature, plan.user, plan.input_tokens, plan.max_output_tokens,
        ) and held.reserved_usd == (None if nanos is None else nanos_to_usd(nanos))  # fmt: skip

    def _found(self, plan: _ReservePlan, held: Reservation) -> Reservation:
        """The answer to a retry of a reserve whose answer was lost, the store holding it: the
        ladder step the store's totals (this hold in them) give, refused past the soft share as
        a fresh reserve would be (its hold given back), else the reservation, kept for a retry."""
        rules = self._caches[3]
        checks = plan.checks
        step: Step = "normal"
        if plan.scopes.limited:
            totals = self.store.totals(plan.day, [(c.scope, c.metric) for c in checks], plan.now_ms)
            usage = [sum(totals[(c.scope, c.metric)]) for c in checks]
            step = self._ladder_step(usage, [c.limit for c in checks], rules)
        reservation = dataclasses.replace(held, step=step)
        if step in rules.refused:
            stays = not self._release(reservation, forget=True) and plan.request_id in self._orphan_ids
            raise self._soft_refusal(
                plan.day, checks, plan.now_ms, plan.feature, plan.user, step=step, own_hold=stays
            )
        return self._keep(reservation)

    def _soft_refusal(
        self,
        day: str,
        checks: Sequence[Check],
        now_ms: int,
        feature: str | None,
        user: str | None,
        usage: Sequence[int] = (),
        step: Step = "hard_refusal",
        *,
        own_hold: bool = False,
    ) -> BudgetExceededError:
        """The refusal of a call whose tightest budget passed a refusing step of the ladder
        (``step``: ``cache_only`` or ``soft_refusal``; a call filling a budget exactly is refused
        at the top one configured), with that budget's figures (read after the call's own
        reservation was given back; when the store cannot be read, from ``usage``, the reserve's
        own ``spent + reserved`` per check with the call in it, else as nothing used: the refusal
        stands either way). ``own_hold``: the call's own reservation could not be given back (left
        to release once the store answers), so its hold, ``checks``' amounts, is in the store's
        totals and is not counted as used before the call. (A retry of such a call is told the
        totals as they are: what its earlier hold was is not known here.)"""
        limited = [c for c in checks if c.limit]
        try:
            totals = self.store.totals(day, [(c.scope, c.metric) for c in limited], now_ms)
            used = {
                c: max(0, sum(totals[(c.scope, c.metric)]) - (c.amount if own_hold else 0)) for c in limited
            }
        except (BudgetUnavailableError, StoreRefusedError, OSError):
            after = dict(zip(checks, usage, strict=False))  # empty when the store reported none
            used = {c: max(0, after[c] - c.amount) if c in after else 0 for c in limited}
        tight = max(limited, key=lambda c: (used[c] + c.amount) / c.limit if c.limit else 0.0)
        assert tight.limit is not None
        money = tight.metric == "nanos"
        self._refusing(day, feature, user, tight, used[tight])
        return BudgetExceededError(
            budget=self._budget_name(tight),
            scope=self._scope_text(feature, user),
            limit=nanos_to_usd(tight.limit) if money else tight.limit,
            used=nanos_to_usd(used[tight]) if money else used[tight],
            requested=nanos_to_usd(tight.amount) if money else tight.amount,
            step=step if step != "hard_refusal" else self._caches[3].top_refusal,
        )

    @staticmethod
    def _ladder_step(usage: Sequence[int], limits: Sequence[int | None], rules: _LadderRules) -> Step:
        """``self.policy.ladder.step(share)`` of the tightest budget (``usage``: spent + reserved
        per budget after reserving, against ``limits``), on thresholds read once.

        A call that fills a budget exactly (the store took it) is ``hard_refusal`` only when a
        soft refusal is configured, which refuses it (``rules.refused``); otherwise it is
        granted, at the ladder's top configured step: a granted reservation never says
        ``hard_refusal``, so an app refusing on that step never drops a call it holds."""
        share = 0.0
        for used, limit in zip(usage, limits, strict=True):
            if limit and used / limit > share:
                share = used / limit
        if share >= 1:
            if rules.refused:
                return "hard_refusal"
            return rules.ladder[-1][1] if rules.ladder else "normal"
        current: Step = "normal"
        for threshold, name in rules.ladder:
            if share >= threshold:
                current = name
        return current

    def _step(self, day: str, checks: Sequence[Check], now_ms: int, rules: _LadderRules) -> Step:
        """:meth:`_ladder_step` of a reservation made on a store that reported no usage, read
        from its totals (the reservation counted in)."""
        totals = self.store.totals(day, [(c.scope, c.metric) for c in checks], now_ms)
        return self._ladder_step(
            [sum(totals[(c.scope, c.metric)]) for c in checks], [c.limit for c in checks], rules
        )

    def commit(
        self,
        reservation: Reservation,
        usage: Usage,
        *,
        cache_hit: bool = False,
        saved_usd: Decimal | None = None,
        model: str | None = None,
        premium_model: str | None = None,
        unknown_model: Literal["error", "unpriced"] = "error",
    ) -> Charge:
        """Charge the actual usage of a reserved call (idempotent per request id).

        Args:
            reservation: What :meth:`reserve` returned.
            usage: What the call used.
            cache_hit: The answer came from an application cache (recorded with ``saved_usd``).
            saved_usd: What the cache hit saved; only with ``cache_hit=True`` (a saving with no
                hit is refused).
            model: The model that actually answered, when it is not the reserved one (a router
                reserved its premium model's worst case, a fallback answered): the usage is
                priced and attributed on it.
            premium_model: The call was routed and this is its premium tier's model: the rollup
                counts it in ``routed_requests`` and adds ``routing_saved_nanos``, the same
                usage priced on ``premium_model`` minus its actual cost. Signed: a call that
                cost more than the premium model would have (a pricier fallback) counts
                negative, so reports show the net saving. It counts 0 when either model is
                unpriced, or when the premium model's window could not have held the call.
            unknown_model: What to do when the registry does not know ``model`` (a dated
                snapshot or fine-tune that answered): ``"error"`` (the default) raises, after
                releasing the reservation (the call's worst case is not held for a whole lease; a
                later commit of it still charges); ``"unpriced"`` charges the tokens with no cost,
                counted in reports' ``unpriced_requests`` (see :meth:`record`).

        Raises:
            InvalidInputError: ``usage`` is not a :class:`~tokenbudget_core.usage.Usage`, covers
                no call (``requests=0``) yet has tokens or is a cache hit, or ``saved_usd`` comes
                without ``cache_hit``; or ``model`` / ``premium_model`` is not a model name.
            UnknownModelError: ``model`` (with ``unknown_model="error"``) or ``premium_model`` is
                unknown to the registry; the reservation was released.
        """
        _check_reservation(reservation)
        memory = self._memory
        if (
            (memory is not None or self._keyed is not None)
            and model is None
            and premium_model is None
            and cache_hit is False
            and saved_usd is None
            and type(usage) is Usage
            and unknown_model == "error"
        ):
            charged = self._lane_commit(memory, reservation, usage)
            if charged is not None:
                return charged
        unpriced = _unknown_model_option(unknown_model)
        try:
            plan = self._plan_of(reservation, usage, model, premium_model, cache_hit, saved_usd, unpriced)
        except UnknownModelError:
            self.release(reservation)  # nothing charged: at least hold nothing
            raise
        return self._commit_now(plan)

    def _plan_of(
        self,
        r: Reservation,
        usage: Usage,
        model: str | None,
        premium_model: str | None,
        cache_hit: bool = False,
        saved_usd: Decimal | None = None,
        unpriced_if_unknown: bool = False,
        down: BudgetUnavailableError | None = None,
    ) -> _CommitPlan:
        """The commit plan of reservation ``r`` (charged on ``model`` when given; ``down``: see
        :meth:`_commit_plan`).

        Raises:
            InvalidInputError: ``r`` holds ids that are not strings (a hand-made reservation).
        """
        if not (
            (r.feature is None or type(r.feature) is str)
            and (r.user is None or type(r.user) is str)
            and (r.conversation is None or type(r.conversation) is str)
        ) or _unencodable(r.feature, r.user, r.conversation):
            _check_ids(feature=r.feature, user=r.user, conversation=r.conversation)
        return self._commit_plan(
            r.request_id, r.day, r.model if model is None else _model_name("model", model), r.feature,
            r.user, r.conversation, r.overhead, usage, cache_hit, saved_usd, premium_model,
            unpriced_if_unknown, down, minute=_priced_minute(r),
        )  # fmt: skip

    def record(
        self,
        usage: Usage,
        *,
        model: str,
        feature: str | None = None,
        user: str | None = None,
        conversation: str | None = None,
        request_id: str | None = None,
        cache_hit: bool = False,
        saved_usd: Decimal | None = None,
        premium_model: str | None = None,
        at: float | datetime | None = None,
        unknown_model: Literal["error", "unpriced"] = "error",
        **unknown: object,
    ) -> Charge:
        """Charge usage that was never reserved (after-the-fact accounting; idempotent per request id).

        Args:
            usage: What the call used.
            model: The model that answered.
            feature: The feature, used only when no enclosing :func:`~tokenbudget_core.attribute`
                block sets one: a block's ids win over these arguments (the outermost payer pays).
            user: The user (a block's wins, the same way).
            conversation: The conversation (a block's wins, the same way).
            request_id: The call's id: recording the same id again changes nothing.
            cache_hit: The answer came from an application cache (recorded with ``saved_usd``).
            saved_usd: What the cache hit saved; only with ``cache_hit=True`` (a saving with no
                hit is refused).
            premium_model: The call was routed, see :meth:`commit`.
            at: When the call happened (epoch seconds, or a datetime with a time zone; default
                now, by the ledger's clock). It decides the prices the usage is charged at (as
                :func:`~tokenbudget_core.pricing.cost_of` with ``at``: off-peak hours, dated
                price changes) and the ledger day it is charged to, and idempotency holds per
                day: a retry that passes the same ``at`` is applied once even after midnight,
                and usage recorded late (from a queue) lands on the day it was spent. A
                conversation is counted once per day and feature for three days (on Redis, as
                long as the day's request ids are kept): usage of it recorded for a day more
                than three days after its first record of that day counts it again in cost per
                conversation (the marks would otherwise grow with every conversation ever
                held). The store counts it in the commit's own atomic step, so a process
                killed before its commit leaves it to the conversation's next call.
            unknown_model: What to do when the registry does not know ``model``: ``"error"``
                (the default) raises; ``"unpriced"`` records the tokens and attribution with no
                cost, counted in reports' ``unpriced_requests`` (never as $0), for callers that
                must not lose usage they cannot refuse (an after-the-fact event handler). To price
                its later calls, give the model a price: ``register_price("name",
                PriceOverride(input_mtok=..., output_mtok=...))`` (``table=ledger.prices`` for a
                ledger built with its own ``prices``), or a ``[prices."name"]`` table in the file
                ``$TOKENBUDGET_PRICES`` names (or one :func:`~tokenbudget_core.pricing.load_prices`
                reads). Registering it (``ledger.registry.register``) only makes it known: its
                calls are then recorded without ``unknown_model``, still unpriced.

        Raises:
            InvalidInputError: A bad argument, named (``at`` in the future, a naive datetime,
                ``usage.requests=0`` with tokens, ``saved_usd`` without ``cache_hit``, a misspelt
                keyword with the closest one...).
            UnknownModelError: ``model`` is unknown to the registry (and ``unknown_model="error"``).
        """
        if unknown:
            refuse_unknown("Ledger.record", unknown, _RECORD_ARGS, kind="argument")
        _check_ids(feature=feature, user=user, conversation=conversation, request_id=request_id)
        unpriced = _unknown_model_option(unknown_model)
        ctx = current_attribution()
        instant = None if at is None else self._instant("at", at)
        return self._commit(
            request_id=request_id or new_request_id(),
            day=self.day() if at is None else self._day_at("at", at),
            model=model,
            feature=ctx.feature or feature,
            user=ctx.user or user,
            conversation=ctx.conversation or conversation,
            overhead=ctx.overhead,
            usage=usage,
            cache_hit=cache_hit,
            saved_usd=saved_usd,
            premium_model=premium_model,
            unpriced_if_unknown=unpriced,
            at=instant,  # priced when the call happened
        )

    def _commit(self, **call: Any) -> Charge:
        return self._commit_now(self._commit_plan(**call))

    def _commit_now(self, plan: _CommitPlan) -> Charge:
        if self._memory is not None:  # no store round trip: no steps to drive
            return self._commit_in_memory(plan, self._memory)
        return _drive(self._commit_driven(plan), self._store_commit)

    def commit_many(
        self, items: Sequence[tuple[Reservation, Usage] | tuple[Reservation, Usage, Mapping[str, Any]]]
    ) -> list[Charge | Exception]:
        """Commit several reserved calls with few store round trips (on Redis, one pipeline per
        500 calls).

        Each commit is applied once per request id, exactly as :meth:`commit` would; a commit the
        store cannot take is spooled like any other. An item may carry a third element, the
        options of :meth:`commit` for that call (``model``, ``premium_model``, ``unknown_model``).
        Returns, per item,
        its :class:`Charge` or the error :meth:`commit` would have raised.

        Raises:
            InvalidInputError: ``items`` is not a list of items (a string, bytes, a dict, a set,
                ``None``, a number...), named ``items``: before any item is looked at.
        """
        steps: list[Generator[CommitRequest, CommitOutcome, Charge]] = []
        down: BudgetUnavailableError | None = None  # a conversation's mark found the store away
        for item in _batch("items", items, "(reservation, usage[, options]) tuples"):
            try:
                reservation, usage, options = _commit_item(item)
                model, premium = options.get("model"), options.get("premium_model")
                unpriced = _unknown_model_option(options.get("unknown_model", "error"))
                plan = self._plan_of(
                    reservation, usage, model, premium, unpriced_if_unknown=unpriced, down=down
                )
                down = down or plan.unavailable  # the next commits' marks do not wait for it again
            except UnknownModelError as e:  # as commit(): nothing charged, nothing held
                self.release(reservation)
                steps.append(_failing(e))
            except TokenBudgetError as e:  # this item's own error, returned in its place
                steps.append(_failing(e))
            else:
                steps.append(self._commit_steps(plan))
        return self._many(steps, "commit_many", "commit")

    def _many(self, steps: Sequence[Generator[Any, Any, T]], many: str, one: str) -> list[T | Exception]:
        """Run the store requests of several operations in one round trip when the store can.

        The commits among them that go to the spool are written there together before this
        returns (one write, one fsync: see :meth:`_spool_batch`), not a line and a disk wait each.
        """
        batch = self._batch
        if getattr(batch, "spool", None) is not None:  # (never: a batch inside a batch) as they come
            return self._run_many(steps, many, one)
        batch.spool = []
        results: list[T | Exception] = []
        try:
            results = self._run_many(steps, many, one)
        finally:  # even on an interrupt: the lines are kept
            spooled, batch.spool = batch.spool, None
            failed = self._spool_batch(spooled)
        for i, error in failed.items():
            results[i] = error
        return results

    def _spool_batch(
        self, spooled: list[tuple[int, CommitRequest, BudgetUnavailableError, tuple[str, int] | None]]
    ) -> dict[int, BudgetUnavailableError]:
        """Write a batch's commits to spool (the item's index, the request, why, its mark) in one
        append; on a spool that cannot be written, each one's error (as :meth:`_spool` raises)."""
        if not spooled:
            return {}
        try:
            self.spool.append_many([(req, mark) for _, req, _, mark in spooled])
        except OSError as e:
            return {i: self._unspooled(req, unavailable, e) for i, req, unavailable, _ in spooled}
        self._next_spool_check = 0.0  # replay on the first operation that reaches the store again
        return {}

    def _run_many(self, steps: Sequence[Generator[Any, Any, T]], many: str, one: str) -> list[T | Exception]:
        """:meth:`_many`'s operations, each step told its item's index (``_batch.index``)."""
        batch = self._batch
        results: list[T | Exception] = [ValueError("not run")] * len(steps)
        pending: list[tuple[int, Generator[Any, Any, T], Any]] = []
        for i, step in enumerate(steps):
            batch.index = i
            try:
                pending.append((i, step, step.send(None)))
            except StopIteration as done:
                results[i] = done.value
            except Exception as e:  # noqa: BLE001 - this call's own error, returned in its place
                results[i] = e
        if not pending:
            return results
        requests = [req for _, _, req in pending]
        outcomes: list[Any]
        send_many = getattr(self.store, many, None)
        if send_many is None:
            send_one: Callable[[Any], Any] = getattr(self.store, one)
            outcomes = []
            unavailable: BudgetUnavailableError | None = None
            for req in requests:
                if unavailable is not None:  # the store just failed: the rest fail alike, at once
                    unsent = own_copy(unavailable)  # (not each after its own timeout)
                    unsent.sent = False
                    outcomes.append(unsent)
                    continue
                try:
                    outcomes.append(self._store_call(functools.partial(send_one, req)))
                except BudgetUnavailableError as e:
                    unavailable = e
                    outcomes.append(e)
                except Exception as e:  # noqa: BLE001 - handed to its own call below
                    outcomes.append(e)
        else:
            try:
                outcomes = self._store_call(lambda: send_many(requests))
            except (BudgetUnavailableError, StoreRefusedError) as e:  # each item's own (commits spool)
                outcomes = [own_copy(e) for _ in requests]
        for (i, step, _), outcome in zip(pending, outcomes, strict=True):
            batch.index = i
            try:
                if isinstance(outcome, Exception):
                    step.throw(outcome)
                else:
                    step.send(outcome)
                results[i] = ValueError("a ledger step yielded twice")  # never: one request each
            except StopIteration as done:
                results[i] = done.value
            except Exception as e:  # noqa: BLE001 - this call's own error, returned in its place
                results[i] = e
        return results

    def _commit_steps(self, plan: _CommitPlan) -> Generator[CommitRequest, CommitOutcome, Charge]:
        """:meth:`commit` of ``plan``, yielding its store request (unless the memory store's fast
        path takes it)."""
        if self._memory is not None:
            return self._commit_in_memory(plan, self._memory)
        return (yield from self._commit_driven(plan))

    def _commit_plan(
        self,
        request_id: str,
        day: str,
        model: str,
        feature: str | None,
        user: str | None,
        conversation: str | None,
        overhead: str | None,
        usage: Usage,
        cache_hit: bool,
        saved_usd: Decimal | None,
        premium_model: str | None,
        unpriced_if_unknown: bool = False,
        down: BudgetUnavailableError | None = None,
        at: float | None = None,
        minute: int | None = None,
    ) -> _CommitPlan:
        """What :meth:`commit` asks the store: the charges per budget and the attribution row
        (``down``: the store was just found unreachable, by another commit of the same batch:
        the conversation's mark is not asked for, the commit is spooled). The usage is priced at
        ``minute`` (epoch minutes: when its reservation was priced), else at ``at`` (epoch
        seconds: when the call happened, a record's ``at``), else at the ledger's clock now:
        prices change with the time of day and the date.

        Raises:
            InvalidInputError: ``usage`` is not a :class:`~tokenbudget_core.usage.Usage`, or its
                figures contradict a call (:func:`_check_call_figures`).
            UnknownModelError: ``model`` (unless ``unpriced_if_unknown``) or ``premium_model``
                is unknown to the registry.
        """
        if not isinstance(usage, Usage):
            raise InvalidInputError("usage", f"must be a Usage, got {type(usage).__name__}", value=usage)
        tokens = usage.input_tokens + usage.output_tokens
        if tokens + usage.requests > _MAX_AMOUNT or type(cache_hit) is not bool:
            _check_commit_figures(usage, cache_hit)
        if (usage.requests == 0 and (tokens or cache_hit)) or (saved_usd is not None and not cache_hit):
            _check_call_figures(usage, cache_hit, saved_usd)
        now_ms = self._now_ms()
        if minute is None:
            minute = now_ms // 60_000 if at is None else int(at // 60)
        try:
            self._model_info(model)
            nanos = self._price_nanos(usage, model, round_up=False, minute=minute)
        except UnknownModelError as e:
            if not unpriced_if_unknown:  # what commit / record take: say so
                unpriced = "pass unknown_model='unpriced' to record its tokens with no cost"
                raise e.with_fix(f"{unpriced}, or {REGISTER_MODEL}") from None
            nanos = None  # recorded without a cost, counted as unpriced
        cost = 0 if nanos is None else nanos
        if cost > _MAX_AMOUNT:
            raise _too_large("usage", f"costs ${nanos_to_usd(cost)}", usage)
        saved = 0
        if saved_usd is not None:
            saved = usd_to_nanos(saved_usd, field="saved_usd")
            if saved > _MAX_AMOUNT:
                raise _too_large("saved_usd", f"is ${saved_usd}", saved_usd)
        rollup = _call_rollup(
            usage, cost, cache_hit=cache_hit, saved=saved, overhead=bool(overhead), unpriced=nanos is None
        )
        if overhead:  # counted apart, so a feature's hit rate is of its users' calls
            rollup["overhead_requests"] = usage.requests
            if cache_hit:
                rollup["overhead_cache_hits"] = usage.requests
        routing_saved_usd = None
        if premium_model is not None:  # a routed call: its counterfactual (nothing added otherwise)
            routed = self._routing_saved(usage, nanos, premium_model, minute)
            if routed is not None and abs(routed) > _MAX_AMOUNT:
                raise _too_large(
                    "premium_model", f"makes a routing saving of ${nanos_to_usd(routed)}", routed
                )
            rollup["routed_requests"] = usage.requests
            rollup["routing_saved_nanos"] = routed or 0
            routing_saved_usd = None if routed is None else nanos_to_usd(routed)
        conversation_mark = None
        unavailable = None
        if conversation is not None:  # counted once per day and feature, for cost per conversation
            key = f"conv/{day}/{_enc(feature)}/{_enc(conversation)}"
            if self._commit_marks:  # set by the commit itself: a process killed before it marks nothing
                conversation_mark = key
            else:
                try:
                    if down is not None:
                        raise own_copy(down)
                    rollup["conversations"] = int(self.store.mark_once(key, CONVERSATION_MARK_TTL_S))
                except (BudgetUnavailableError, StoreRefusedError, OSError) as e:
                    conversation_mark = key  # the store is down: the spooled commit's replay marks it
                    if isinstance(e, BudgetUnavailableError | StoreRefusedError):
                        unavailable = self._unavailable(e)
        scopes = self._scopes_of(feature, user)
        cost_key, per_call_key = _sample_keys(
            _enc(feature), nanos is not None, bool(overhead), usage.requests, cache_hit
        )
        return _CommitPlan(
            request_id, day, now_ms, feature, user, usage, nanos, cost, scopes,
            tokens, scopes.rollup_prefix + self._model_key(model), rollup, cost_key,
            routing_saved_usd, per_call_key, conversation_mark, unavailable,
        )  # fmt: skip

    def _charge(self, plan: _CommitPlan, *, applied: bool, spooled: bool = False) -> Charge:
        if not (applied or spooled):  # the id was committed before: this commit charged nothing
            return _new_charge(plan.request_id, plan.usage, None, False, False, None)
        cost_usd = None if plan.nanos is None else nanos_to_usd(plan.nanos)
        return _new_charge(
            plan.request_id, plan.usage, cost_usd, applied, spooled, plan.routing_saved_usd
        )  # fmt: skip

    def _commit_in_memory(self, plan: _CommitPlan, memory: MemoryStore) -> Charge:
        """:meth:`commit` on the in-process store: its tuple path, no request or outcome objects."""
        scopes, tokens, cost = plan.scopes, plan.tokens, plan.cost
        amounts = scopes.amounts(tokens, cost)
        applied, _, spent = memory.commit_cells(
            plan.day, plan.request_id, memory.cells(plan.day, scopes.keys), amounts, plan.rollup_key,
            plan.rollup, plan.cost_key, plan.conversation_mark,
        )  # fmt: skip
        self._replay_due()
        if applied and plan.per_call_key is not None:
            self._record_per_call(plan.day, plan.per_call_key, plan.cost, plan.usage.requests)
        if applied and self._alert_due(scopes, spent):
            self._after_commit(plan, spent, record_cost=False)
        return self._charge(plan, applied=applied)

    def _alert_due(self, scopes: _Scopes, spent: Sequence[int]) -> bool:
        """Some budget of ``scopes`` reached an alert threshold (``spent`` per budget) and there
        is a sink to tell."""
        if scopes.limited and self.sinks:
            floor = self._caches[3].alert_floor
            return any(
                limit and used / limit >= floor for limit, used in zip(scopes.limits, spent, strict=True)
            )
        return False

    def _commit_driven(self, plan: _CommitPlan) -> Generator[CommitRequest, CommitOutcome, Charge]:
        """:meth:`commit` on any store: yields the store request, spools it when the store is down."""
        req = self._commit_request(plan)
        if plan.unavailable is not None:  # the store just failed the conversation's mark: no second wait
            return self._spooled(plan, req, plan.unavailable)
        try:
            outcome = yield req
        except (BudgetUnavailableError, StoreRefusedError) as e:
            return self._spooled(plan, req, e)
        if outcome.applied:
            if plan.per_call_key is not None:
                self._record_per_call(plan.day, plan.per_call_key, plan.cost, plan.usage.requests)
            record = not outcome.recorded_cost and plan.cost_key is not None
            self._after_commit(plan, outcome.spent, record_cost=record)
        return self._charge(plan, applied=outcome.applied)

    def _commit_request(self, plan: _CommitPlan) -> CommitRequest:
        scopes = plan.scopes
        charges = scopes.checks(scopes.amounts(plan.tokens, plan.cost))  # limits are ignored by a commit
        mark = plan.conversation_mark if self._commit_marks else None
        return _new_commit_request(
            plan.day, plan.request_id, charges, plan.rollup_key, plan.rollup, plan.now_ms, plan.cost_key,
            mark,
        )  # fmt: skip

    def _spooled(
        self, plan: _CommitPlan, req: CommitRequest, failed: BudgetUnavailableError | StoreRefusedError
    ) -> Charge:
        """The charge of ``plan`` (its store request ``req``) spooled: the store was unreachable,
        or refused it (credentials, ACL: logged)."""
        mark = None  # the request carries the mark (the replay's commit sets it), or it comes apart
        if plan.conversation_mark is not None and not self._commit_marks:
            mark = (plan.conversation_mark, CONVERSATION_MARK_TTL_S)
        self._spool(req, self._unavailable(failed), mark)
        return self._charge(plan, applied=False, spooled=True)

    def _unavailable(self, failed: BudgetUnavailableError | StoreRefusedError) -> BudgetUnavailableError:
        """``failed`` as the outage a commit is spooled for; a refusal is logged as an ERROR (it
        does not pass by itself: someone must fix the store's credentials or ACL)."""
        if isinstance(failed, BudgetUnavailableError):
            return failed
        logger.error("the budget store refused a commit (%s); its usage is spooled and kept", failed)
        spooled = BudgetUnavailableError(redact_url(self.store.url), f"refused: {failed}")
        spooled.__cause__ = failed
        return spooled

    def _spool(
        self, req: CommitRequest, unavailable: BudgetUnavailableError, mark: tuple[str, int] | None
    ) -> None:
        """Keep a commit the store could not take in the spool, for a later replay (in a batch,
        :meth:`_many` writes it with the batch's others, and returns this error in its place).

        Raises:
            BudgetUnavailableError: The spool could not be written either (the usage is in no
                store: the caller has to keep it).
        """
        batch = getattr(self._batch, "spool", None)
        if batch is not None:  # in a batch: written with the batch's others before it returns
            batch.append((self._batch.index, req, unavailable, mark))
            return
        try:
            self.spool.append(req, mark=mark)
        except OSError as e:
            raise self._unspooled(req, unavailable, e) from e
        self._next_spool_check = 0.0  # replay on the first operation that reaches the store again

    def _unspooled(
        self, req: CommitRequest, unavailable: BudgetUnavailableError, error: OSError
    ) -> BudgetUnavailableError:
        """The error of a commit neither the store nor the spool took (``error``: the spool's)."""
        unspooled = BudgetUnavailableError(
            unavailable.store,
            f"and the usage could not be written to the spool {str(self.spool.path)!r}: "
            f"{type(error).__name__}: {error}",
            consequence=f"the usage of request {req.request_id!r} is not recorded. Fix the spool "
            "path (spool_path= or $TOKENBUDGET_SPOOL) and record the usage again.",
        )
        unspooled.__cause__ = error
        return unspooled

    def _routing_saved(
        self, usage: Usage, nanos: int | None, premium_model: object, minute: int
    ) -> int | None:
        """``usage`` priced on the premium model (at ``minute``, as the call) minus its actual cost
        ``nanos``, in nano-USD (signed).

        0 when the premium model's window could not have held the call (routing had no choice);
        ``None`` when either price is unknown.
        """
        info = self.registry.get(_model_name("premium_model", premium_model), field="premium_model")
        if info.context_window is not None and usage.input_tokens + usage.output_tokens > info.context_window:
            return 0
        premium = self._price_nanos(usage, info.name, round_up=False, minute=minute)
        return None if premium is None or nanos is None else premium - nanos

    def _record_per_call(self, day: str, key: str, cost: int, requests: int) -> None:
        """The cost samples of an applied commit of ``requests`` calls costing ``cost`` in all:
        each call's share (at most :data:`_MAX_CALL_SAMPLES`; if the store drops now, reports
        lose samples at worst). The charge is stored: nothing failing here makes the commit raise
        (a caller would take the stored charge for one not made, and charge it again)."""
        try:
            for sample in _per_call_costs(cost, requests):
                self.store.record_call_cost(day, key, sample)
        except BudgetUnavailableError:
            pass
        except Exception as e:  # noqa: BLE001 - refused (another application's key), or a bug: logged
            logger.warning(
                "the charge of %d calls was stored, but their cost samples were not (%s: %s): reports "
                "of cost per call miss them",
                requests,
                type(e).__name__,
                e,
            )

    def _after_commit(self, plan: _CommitPlan, spent: Sequence[int], *, record_cost: bool) -> None:
        """The cost sample (if the store did not keep it) and threshold alerts of an applied commit.

        The charge itself is stored: if the store drops now, reports lose one sample at worst;
        nothing failing here makes the commit raise (a caller would take the stored charge for
        one not made, and charge it again).
        """
        try:
            if record_cost:
                self.store.record_call_cost(plan.day, _enc(plan.feature), plan.cost)
            self._threshold_alerts(plan.day, plan.feature, plan.user, plan.scopes, plan.now_ms, spent)
        except (BudgetUnavailableError, StoreRefusedError):
            pass
        except Exception:
            logger.exception(
                "after the charge of request %s was stored, its cost sample or alerts failed "
                "(the charge stands)",
                plan.request_id,
            )

    def _threshold_alerts(
        self,
        day: str,
        feature: str | None,
        user: str | None,
        scopes: _Scopes,
        now_ms: int,
        spent: Sequence[int],
    ) -> None:
        """The threshold alerts of the payer's budgets ``scopes`` after an applied commit
        (``spent``: the new totals per budget; read from the store when it did not report them all).

        Raises:
            BudgetUnavailableError: The totals could not be read.
        """
        if not scopes.limited or not self.sinks:
            return
        budgets = scopes.budgets
        if len(spent) != len(budgets):  # the store did not report the new totals
            limited = [(sc, m) for sc, m, limit in budgets if limit]
            totals = self.store.totals(day, limited, now_ms)
            spent = [totals[(sc, m)][0] if limit else 0 for sc, m, limit in budgets]
        floor = self._caches[3].alert_floor
        for (scope, metric, limit), used in zip(budgets, spent, strict=True):
            if limit and used / limit >= floor:
                self._alert(
                    day, feature, user, Check(scope=scope, metric=metric, amount=0, limit=limit), used
                )

    def _alert(self, day: str, feature: str | None, user: str | None, c: Check, spent: int) -> None:
        """Send the alerts of every threshold ``spent`` reached on ``c``'s budget, once per day
        and limit each (a limit raised during the day alerts again at its own thresholds).

        The store's mark decides which ledger sends an alert; a mark this ledger has seen set is
        remembered, so a budget past a threshold costs one store round trip per threshold, limit
        and day, not one per commit (kept for the newest two days seen: a day's late commits,
        a reservation made before midnight, still find theirs)."""
        assert c.limit
        marked = self._alerts_marked.get(day)
        for threshold in sorted(self.policy.alert_thresholds):
            if spent / c.limit < threshold:
                break
            told = (c.scope, c.metric, c.limit, threshold)
            if marked is not None and told in marked:
                continue
            if self._past_alert_marks(day):
                return
            first = self.store.mark_once(
                f"alert/{day}/{c.scope}/{c.metric}/{c.limit}/{threshold}", ALERT_MARK_TTL_S
            )
            if marked is None:
                marked = self._alert_marks_of(day)
            if len(marked) >= 65_536:  # many payers past a threshold: start over, never grow without end
                marked.clear()
            marked.add(told)
            if first:
                dispatch(self.sinks, self._alert_of(day, feature, user, c, threshold, spent))

    def _past_alert_marks(self, day: str) -> bool:
        """Whether ``day`` is so old that its alert marks may have expired from the store (see
        :data:`ALERT_MARK_TTL_S`): its alerts are not sent, as they could be sent twice."""
        now = self._now_ms() / 1000
        try:
            oldest = datetime.fromtimestamp(now - ALERT_MARK_TTL_S + 86_400, self._tz).date().isoformat()
        except (OverflowError, ValueError, OSError):  # a clock near the calendar's start: nothing older
            return False
        return day < oldest

    def _alert_marks_of(self, day: str) -> set[tuple[str, str, int, float]]:
        """The memo of ``day``'s alert marks (new), the days before the newest other one dropped."""
        with self._alerts_lock:
            days = self._alerts_marked
            if len(days) >= 2:
                newest = max(days)
                for old in [d for d in days if d != newest]:
                    days.pop(old, None)
            return days.setdefault(day, set())

    def _refusing(self, day: str, feature: str | None, user: str | None, c: Check, used: int) -> None:
        """Tell the sinks, once per budget, limit and day, that ``c``'s budget refused a call
        (``used``: spent and reserved when it did; a limit raised during the day tells it again).
        Spending stops short of a limit while calls are refused (the default ladder refuses from
        90%), so the alerts on spend may never say so.

        The refusal stands whatever happens here: a store that cannot mark the alert leaves it to
        the next refusal it answers."""
        rules = self._caches[3]
        if not self.sinks or not c.limit:
            return
        # a call the budget would refuse empty (too big for it however much is left: at least the
        # soft refusal's share, as the ladder reads it, else more than the limit) says nothing of
        # the budget running out, and must not use up the day's alert
        soft = next((t for t, name in rules.ladder if name in rules.refused), None)
        if (c.amount / c.limit >= soft) if soft is not None else c.amount > c.limit:
            return
        told = (day, c.scope, c.metric, c.limit)
        if told in self._refusals_told:  # one store round trip per budget, limit and day, not per refusal
            return
        if self._past_alert_marks(day):
            return
        try:
            first = self.store.mark_once(
                f"alert/{day}/{c.scope}/{c.metric}/{c.limit}/refusing", ALERT_MARK_TTL_S
            )
        except (BudgetUnavailableError, StoreRefusedError, OSError):
            return
        if len(self._refusals_told) >= 65_536:  # many payers refused: start over, never grow without end
            self._refusals_told.clear()
        self._refusals_told.add(told)
        if first:
            alert = self._alert_of(day, feature, user, c, used / c.limit, used)
            dispatch(self.sinks, dataclasses.replace(alert, refusing=True))

    def _alert_of(
        self, day: str, feature: str | None, user: str | None, c: Check, threshold: float, used: int
    ) -> Alert:
        assert c.limit
        money = c.metric == "nanos"
        return Alert(
            day=day,
            budget=self._budget_name(c),
            scope=self._budget_scope_text(c, feature, user),
            # whose budget, as the calls name them: Alert.id tells payers apart by these
            feature=(feature or None) if c.scope[0] in "fu" else None,
            user=(user or None) if c.scope[0] in "uU" else None,
            threshold=threshold,
            used=decimal_text(nanos_to_usd(used)) if money else str(used),
            limit=decimal_text(nanos_to_usd(c.limit)) if money else str(c.limit),
        )

    def settle(
        self,
        reservation: Reservation,
        reported: Usage | None,
        *,
        reply_text: str = "",
        failed: bool = False,
        counter: TextCounter | str | None = None,
        cache_hit: bool = False,
        saved_usd: Decimal | None = None,
        hit_recorded: bool = False,
        model: str | None = None,
        premium_model: str | None = None,
        unknown_model: Literal["error", "unpriced"] = "error",
    ) -> Charge | None:
        """Close a reserved call with whatever the framework could tell about it.

        * the answer came from a response cache (``cache_hit``): no model was called, so nothing
          is charged; the hit is recorded with what it saved (``saved_usd``, else ``reported``
          priced on the reserved model), unless the cache already recorded it
          (``hit_recorded``: then the reservation is just released);
        * usage was reported: commit it (a report without input tokens, as some streams send,
          takes the counted input and is flagged estimated; figures no ledger can store, beyond
          2**53 - 1 tokens or nano-dollars, are logged and the call is charged the estimate);
        * the call failed before producing anything: release the reservation (returns ``None``);
        * otherwise (no report, or a stream abandoned mid-way: the request was sent): commit an
          estimate, the counted input plus ``reply_text`` counted with ``counter``, flagged.

        ``model`` (the model that answered) and ``premium_model`` (the call was routed) are
        passed on to :meth:`commit`; a cache hit called no model, so it records no routing.

        ``counter`` counts ``reply_text``: a counter (anything with ``count(text)``) or a model name.

        Raises:
            InvalidInputError: ``reservation`` is not a :class:`Reservation`, ``reported`` is not
                a :class:`~tokenbudget_core.usage.Usage` (or ``None``), ``reply_text`` is not a
                string, ``counter`` is not a counter, or a flag is not a bool.
        """
        if not isinstance(reservation, Reservation):
            raise InvalidInputError(
                "reservation", "must be the Reservation that reserve() returned", value=reservation
            )
        if reported is not None and not isinstance(reported, Usage):
            raise InvalidInputError(
                "reported",
                f"must be a Usage or None, got {type(reported).__name__}",
                value=reported,
                fix="convert the provider's usage with Usage.from_openai(...) / Usage.from_anthropic(...)",
            )
        if not isinstance(reply_text, str):
            raise InvalidInputError(
                "reply_text", f"must be a string, got {type(reply_text).__name__}", value=reply_text
            )
        counter = text_counter(counter)
        if not (type(failed) is bool and type(cache_hit) is bool and type(hit_recorded) is bool):
            for flag, value in (("failed", failed), ("cache_hit", cache_hit), ("hit_recorded", hit_recorded)):
                if not isinstance(value, bool):
                    raise InvalidInputError(flag, "must be True or False", value=value)
        if cache_hit:
            if hit_recorded:
                self.release(reservation)
                return None
            if saved_usd is None and reported is not None:
                minute = _priced_minute(reservation)
                nanos = self._price_nanos(
                    reported, reservation.model, round_up=False,
                    minute=self._now_ms() // 60_000 if minute is None else minute,
                )  # fmt: skip
                if nanos is not None and nanos > _MAX_AMOUNT:  # the provider's figures: no saving
                    logger.warning(
                        "request %s: the reported usage cannot be priced as a saving (costs $%s)",
                        reservation.request_id,
                        nanos_to_usd(nanos),
                    )
                    nanos = None
                saved_usd = None if nanos is None else nanos_to_usd(nanos)
            return self.commit(reservation, Usage(requests=1), cache_hit=True, saved_usd=saved_usd)
        if reported is not None:
            reported = reported.with_counted_input(reservation.input_tokens)
            try:
                return self.commit(
                    reservation,
                    reported,
                    model=model,
                    premium_model=premium_model,
                    unknown_model=unknown_model,
                )
            except InvalidInputError as e:  # the provider's figures, after the call went out
                if not refuses_usage(e):
                    raise
                logger.warning(
                    "request %s: the reported usage cannot be charged (%s); charging the estimate",
                    reservation.request_id,
                    e,
                )
        if failed and not reply_text:
            self.release(reservation)
            return None
        return self.commit(
            reservation,
            cut_off_usage(reservation.input_tokens, reply_text, counter=counter),
            model=model,
            premium_model=premium_model,
            unknown_model=unknown_model,
        )

    async def asettle(
        self,
        reservation: Reservation,
        reported: Usage | None,
        *,
        reply_text: str = "",
        failed: bool = False,
        counter: TextCounter | str | None = None,
        cache_hit: bool = False,
        saved_usd: Decimal | None = None,
        hit_recorded: bool = False,
        model: str | None = None,
        premium_model: str | None = None,
        unknown_model: Literal["error", "unpriced"] = "error",
    ) -> Charge | None:
        """Async twin of :meth:`settle` (in a worker thread, which settles the call even when the
        caller is cancelled meanwhile: the caller gets ``CancelledError`` at once, the usage is
        still charged or the reservation released; a failure then is logged)."""
        return await self._async(
            lambda: self.settle(
                reservation,
                reported,
                reply_text=reply_text,
                failed=failed,
                counter=counter,
                cache_hit=cache_hit,
                saved_usd=saved_usd,
                hit_recorded=hit_recorded,
                model=model,
                premium_model=premium_model,
                unknown_model=unknown_model,
            ),
            "settle",
            reservation,
        )

    def release(self, reservation: Reservation) -> bool:
        """Give a reservation back (the call failed). Idempotent; a no-op after a commit."""
        _check_reservation(reservation)
        return self._release(reservation)

    def _release(self, reservation: Reservation, *, forget: bool = False) -> bool:
        # An unchecked reservation (the store was down) is released on the store too: its
        # request may have run there with the answer lost, holding the worst case.
        day, rid = reservation.day, reservation.request_id
        try:
            return self._store_call(lambda: self.store.release(day, rid, self._now_ms(), forget=forget))
        except BudgetUnavailableError:  # released once the store answers again (or its lease ends)
            self._orphan(reservation.day, reservation.request_id, forget=forget)
            return False

    def state(self, *, feature: str | None = None, user: str | None = None, **unknown: object) -> BudgetState:
        """Used shares, headroom and the ladder step of a payer's budgets today.

        As in :meth:`reserve`, an enclosing :func:`~tokenbudget_core.attribute` block's ids win
        over ``feature`` and ``user`` (the state is that of the payer the next call would
        charge); to read another payer's, run it under
        ``attribution.in_force(Attribution())``, as :func:`~tokenbudget_core.budget_status.budget_rows` does.
        With the store unreachable, a ledger that fails open answers an empty state flagged
        ``unchecked`` (step ``normal``), as it lets the calls themselves through; one that fails
        closed raises.

        Raises:
            InvalidInputError: ``feature`` or ``user`` is not a string id, or a keyword is
                misspelt (named, with the closest one).
            BudgetUnavailableError: The store is down and the ledger fails closed.
        """
        if unknown:
            refuse_unknown("Ledger.state", unknown, ("feature", "user"), kind="argument")
        _check_ids(feature=feature, user=user)
        feature, user = charged_ids(feature, user)
        day, now_ms = self.day(), self._now_ms()
        checks = [c for c in self._checks(feature, user, 0, 0) if c.limit is not None]
        try:
            totals = (
                self._store_call(self.store.totals, day, [(c.scope, c.metric) for c in checks], now_ms)
                if checks
                else {}
            )
        except BudgetUnavailableError:
            if self.on_unavailable == "closed":
                raise
            return BudgetState(step="normal", shares={}, headroom={}, unchecked=True)
        shares: dict[str, float] = {}
        headroom: dict[str, Decimal | int] = {}
        used: dict[str, Decimal | int] = {}
        for c in checks:
            spent, reserved = totals[(c.scope, c.metric)]
            assert c.limit is not None
            name = self._budget_name(c)
            shares[name] = (spent + reserved) / c.limit if c.limit else 1.0
            left = max(c.limit - spent - reserved, 0)
            money = c.metric == "nanos"
            headroom[name] = nanos_to_usd(left) if money else left
            used[name] = nanos_to_usd(spent + reserved) if money else spent + reserved
        return BudgetState(
            step=self.policy.ladder.step(max(shares.values(), default=0.0)),
            shares=shares,
            headroom=headroom,
            used=used,
        )

    def context_tokens(
        self, max_tokens: int, *, feature: str | None = None, user: str | None = None, **unknown: object
    ) -> int:
        """The token budget a memory or window of ``max_tokens`` keeps for the payer now: the
        ladder's ``smaller_context`` step acted on. The whole ``max_tokens`` below that step,
        ``policy.ladder.context_share`` of it from there up
        (:meth:`Ladder.context_tokens <tokenbudget_core.budgets.Ladder.context_tokens>` of
        :meth:`state`'s step: the payer is the one :meth:`state` reads, an enclosing
        ``attribute()`` block winning over ``feature`` and ``user``). A ledger failing open whose
        store cannot be read keeps the whole budget (its step reads ``normal``).

        Raises:
            InvalidInputError: ``max_tokens`` is not an integer >= 1, or a bad id or keyword.
            BudgetUnavailableError: The store is down and the ledger fails closed.
        """
        if unknown:
            refuse_unknown("Ledger.context_tokens", unknown, ("feature", "user"), kind="argument")
        _check_ids(feature=feature, user=user)  # (also when the ladder has no smaller_context)
        ladder = self.policy.ladder
        ladder.context_tokens(max_tokens, "normal")  # validates max_tokens before any store read
        if ladder.smaller_context is None:
            return max_tokens
        return ladder.context_tokens(max_tokens, self.state(feature=feature, user=user).step)

    async def acontext_tokens(
        self, max_tokens: int, *, feature: str | None = None, user: str | None = None, **unknown: object
    ) -> int:
        """Async twin of :meth:`context_tokens` (the store read runs in a worker thread)."""
        return await self._async(
            functools.partial(self.context_tokens, max_tokens, feature=feature, user=user, **unknown)
        )

    def check(
        self,
        *,
        model: str,
        input_tokens: int,
        max_output_tokens: int | None = None,
        feature: str | None = None,
        user: str | None = None,
        conversation: str | None = None,
        request_id: str | None = None,
        choices: int = 1,
        cache_writes: Literal["5m", "1h"] | None = None,
        **unknown: object,
    ) -> BudgetCheck:
        """Would this call fit every budget now? :meth:`reserve`'s answer, holding nothing.

        The same arguments and rules as :meth:`reserve` (per-call limits, the worst case priced
        the same way, the ladder's step with the call counted in, soft refusals), answered from
        the store's current totals: nothing is reserved, not even for a moment, so checks never
        refuse real reservations, and a call that was checked must still be reserved before it
        goes out (another call may take the room in between). For an app that decides what to
        send (a smaller context, a cheaper tier) before it builds the request.

        ``request_id`` is validated as :meth:`reserve` validates it and otherwise unused: a check
        holds nothing under it. So a check under an id whose reservation is still live answers for
        the call next to that hold (where a retried reserve would get its reservation back), and
        one under an id already settled is not refused (where a reserve would be).

        Raises:
            BudgetExceededError: :meth:`reserve` would refuse the call now.
            BudgetUnavailableError: The store is down and the ledger fails closed.
            UnpricedModelError: The model has no price and a dollar budget applies.
            InvalidInputError: A bad argument, named (a misspelt keyword with the closest one).
        """
        if unknown:
            refuse_unknown("Ledger.check", unknown, _CHECK_ARGS, kind="argument")
        if request_id is not None:
            _check_ids(request_id=request_id)
        # the checker answers with the ledger's current policy, registry, prices, fail mode, clock,
        # time zone, lease and store: one built from other ones (reassigned since, as a demo pins
        # ``ledger.clock``, or by a swap racing its build) is built again
        key = (
            self._caches, self.registry, self.prices, self.on_unavailable, self.clock, self.tz,
            self.lease_ms, self.store,
        )  # fmt: skip
        cached = self._checker
        if cached is not None and all(map(operator.is_, cached[0], key)):
            checker = cached[1]
        else:
            from .ledger_check import checking_ledger  # it builds a Ledger: imported when first used

            checker = checking_ledger(
                self, policy=key[0][0], registry=key[1], prices=key[2], on_unavailable=key[3],
                clock=key[4], tz=key[5], lease_ms=key[6], store=key[7],
            )  # fmt: skip
            self._checker = (key, checker)
        r = checker.reserve(
            model=model, input_tokens=input_tokens, max_output_tokens=max_output_tokens,
            feature=feature, user=user, conversation=conversation, choices=choices,
            cache_writes=cache_writes,
        )  # fmt: skip
        return BudgetCheck(
            step=r.step,
            input_tokens=r.input_tokens,
            max_output_tokens=r.max_output_tokens,
            worst_case_usd=r.reserved_usd,
            unchecked=r.unchecked,
        )

    # -- async twins ------------------------------------------------------------------------------

    async def _async(self, fn: Callable[[], T], what: str = "a ledger call", of: object = None) -> T:
        """``fn`` (store calls) in a worker thread, with the caller's context; inline on the memory
        store. Once submitted it runs whatever happens to the caller: cancelled meanwhile (a
        timeout), the caller gets ``CancelledError`` at once while the job still runs, so a commit
        or release queued behind other work is never dropped (usage never lost, nothing held to
        its lease's end); an error it raises then is logged, there being no caller left to raise
        it to (``what`` names the call in that log, ``of`` the reservation or request id it is of)."""
        if self._inline:
            return fn()
        made = asyncio.get_running_loop().run_in_executor(None, contextvars.copy_context().run, fn)
        try:
            return await asyncio.shield(made)  # a cancel never cancels the queued job
        except asyncio.CancelledError:
            made.add_done_callback(functools.partial(_log_orphaned_failure, what, of))
            raise

    async def areserve(
        self,
        *,
        model: str,
        input_tokens: int,
        max_output_tokens: int | None = None,
        feature: str | None = None,
        user: str | None = None,
        conversation: str | None = None,
        request_id: str | None = None,
        choices: int = 1,
        cache_writes: Literal["5m", "1h"] | None = None,
    ) -> Reservation:
        """Async twin of :meth:`reserve` (the store call runs in a worker thread).

        Cancelled while the worker thread reserves, it re-raises ``CancelledError`` at once and
        releases the reservation the thread makes: a call that will not be sent holds nothing."""
        reserve = functools.partial(
            self.reserve, model=model, input_tokens=input_tokens, max_output_tokens=max_output_tokens,
            feature=feature, user=user, conversation=conversation, request_id=request_id,
            choices=choices, cache_writes=cache_writes,
        )  # fmt: skip
        if self._inline:
            return reserve()
        handoff = _Handoff()
        context = contextvars.copy_context()  # the attribution, as asyncio.to_thread carries it

        def work() -> Reservation:
            reservation = context.run(reserve)
            if not handoff.deliver(reservation):  # its caller was cancelled meanwhile: undo it here
                self._release_unsent(reservation)
            return reservation

        made = asyncio.get_running_loop().run_in_executor(None, work)
        try:
            return await asyncio.shield(made)
        except asyncio.CancelledError:
            delivered = handoff.abandon()  # reserved already (else the worker thread releases it)
            if delivered is not None:
                try:
                    asyncio.get_running_loop().run_in_executor(None, self._release_unsent, delivered)
                except RuntimeError:  # no executor now (the loop is shutting down)
                    self._release_unsent(delivered)
            raise

    def _release_unsent(self, reservation: Reservation) -> None:
        """Release what a cancelled :meth:`areserve` reserved (its call will not be sent)."""
        try:
            self.release(reservation)
        except Exception:  # its lease ends it: logged, never raised
            logger.exception("could not release %s, reserved by a cancelled call", reservation.request_id)

    async def acommit(
        self,
        reservation: Reservation,
        usage: Usage,
        *,
        cache_hit: bool = False,
        saved_usd: Decimal | None = None,
        model: str | None = None,
        premium_model: str | None = None,
        unknown_model: Literal["error", "unpriced"] = "error",
    ) -> Charge:
        """Async twin of :meth:`commit` (in a worker thread, which commits even when the caller is
        cancelled meanwhile: the caller gets ``CancelledError`` at once; a failure then is logged)."""
        return await self._async(
            lambda: self.commit(
                reservation,
                usage,
                cache_hit=cache_hit,
                saved_usd=saved_usd,
                model=model,
                premium_model=premium_model,
                unknown_model=unknown_model,
            ),
            "commit",
            reservation,
        )

    async def arecord(
        self,
        usage: Usage,
        *,
        model: str,
        feature: str | None = None,
        user: str | None = None,
        conversation: str | None = None,
        request_id: str | None = None,
        cache_hit: bool = False,
        saved_usd: Decimal | None = None,
        premium_model: str | None = None,
        at: float | datetime | None = None,
        unknown_model: Literal["error", "unpriced"] = "error",
        **unknown: object,
    ) -> Charge:
        """Async twin of :meth:`record` (in a worker thread, which records even when the caller is
        cancelled meanwhile: the caller gets ``CancelledError`` at once; a failure then is logged)."""
        return await self._async(
            lambda: self.record(
                usage,
                model=model,
                feature=feature,
                user=user,
                conversation=conversation,
                request_id=request_id,
                cache_hit=cache_hit,
                saved_usd=saved_usd,
                premium_model=premium_model,
                at=at,
                unknown_model=unknown_model,
                **unknown,
            ),
            "record",
            request_id,
        )

    async def acheck(
        self,
        *,
        model: str,
        input_tokens: int,
        max_output_tokens: int | None = None,
        feature: str | None = None,
        user: str | None = None,
        conversation: str | None = None,
        request_id: str | None = None,
        choices: int = 1,
        cache_writes: Literal["5m", "1h"] | None = None,
        **unknown: object,
    ) -> BudgetCheck:
        """Async twin of :meth:`check` (the store read runs in a worker thread)."""
        return await self._async(
            functools.partial(
                self.check, model=model, input_tokens=input_tokens, max_output_tokens=max_output_tokens,
                feature=feature, user=user, conversation=conversation, request_id=request_id,
                choices=choices, cache_writes=cache_writes, **unknown,
            )
        )  # fmt: skip

    async def astate(
        self, *, feature: str | None = None, user: str | None = None, **unknown: object
    ) -> BudgetState:
        """Async twin of :meth:`state` (the store read runs in a worker thread)."""
        return await self._async(functools.partial(self.state, feature=feature, user=user, **unknown))

    async def arelease(self, reservation: Reservation) -> bool:
        """Async twin of :meth:`release` (in a worker thread, which releases even when the caller is
        cancelled meanwhile: the caller gets ``CancelledError`` at once; a failure then is logged)."""
        return await self._async(lambda: self.release(reservation), "release", reservation)

    def close(self) -> None:
        """Close the store's connections."""
        self.store.close()


_RESERVED = ReserveOutcome(ok=True, state="reserved")


class _LadderRules(NamedTuple):
    """What reserves and commits read of a policy's ladder and alerts (see :meth:`Ledger._ladder_step`)."""

    ladder: tuple[tuple[float, Step], ...]
    """The configured steps' thresholds, in order."""
    refused: frozenset[Step]
    """The steps at which a reservation is given back and refused."""
    alert_floor: float
    """The lowest alert threshold (2.0: none)."""

    @property
    def top_refusal(self) -> Step:
        """The step a call filling a budget exactly is refused at: the top refusing step configured."""
        return "soft_refusal" if "soft_refusal" in self.refused else "cache_only"


def _refused_steps(ladder: Ladder) -> frozenset[Step]:
    """The steps of ``ladder`` at which the ledger refuses a call: ``cache_only`` (a call goes out
    no more; caches still answer) and ``soft_refusal``, those configured, and ``hard_refusal`` (a
    call filling a budget exactly, past them) with either."""
    steps: set[Step] = {name for name in _REFUSING_STEPS if getattr(ladder, name) is not None}
    return frozenset({*steps, "hard_refusal"}) if steps else frozenset()


_REFUSING_STEPS: tuple[Step, ...] = ("cache_only", "soft_refusal")


# The policy, its per-feature limits, its payers' scopes and its ladder's rules: one value.
_Caches: TypeAlias = tuple[
    BudgetPolicy, dict[str | None, tuple[int | None, ...]], dict[Any, _Scopes], _LadderRules
]
_ORPHANS_PER_LOOK = 256  # releases of failed reserves made per look (Ledger._release_orphans)
_SPOOL_LINES_PER_LOOK = 1_000  # spooled commits replayed per look (Ledger._replay_due)
_GRANTED_KEPT = 4_096  # per generation: reservations under callers' ids kept for a retry (Ledger._retried)

_REQUIRED_ARGS = frozenset({"model", "input_tokens"})
_RESERVE_ARGS = _REQUIRED_ARGS | {
    "max_output_tokens", "feature", "user", "conversation", "request_id", "choices", "cache_writes"
}  # fmt: skip
_OPTIONAL_ARGS = ", ".join(sorted(_RESERVE_ARGS - _REQUIRED_ARGS))
# the keywords of Ledger.check, Ledger.__init__, record and state, in their order (for refuse_unknown)
_CHECK_ARGS = (
    "model", "input_tokens", "max_output_tokens", "feature", "user", "conversation", "request_id",
    "choices", "cache_writes",
)  # fmt: skip
_LEDGER_ARGS = (
    "store", "policy", "timezone", "lease_seconds", "on_unavailable", "spool_path", "alerts",
    "registry", "prices", "clock",
)  # fmt: skip
_RECORD_ARGS = (
    "usage", "model", "feature", "user", "conversation", "request_id", "cache_hit", "saved_usd",
    "premium_model", "at", "unknown_model",
)  # fmt: skip


class _Handoff:
    """A reservation made in a worker thread for a caller that may be cancelled meanwhile: the
    one of the two that comes second (the thread delivering, the caller abandoning) owns the
    reservation, so it is released exactly once, even when the event loop is gone by then."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._abandoned = False
        self._delivered: Reservation | None = None

    def deliver(self, reservation: Reservation) -> bool:
        """The thread reserved: ``False`` when the caller had abandoned it (the thread releases)."""
        with self._lock:
            if self._abandoned:
                return False
            self._delivered = reservation
            return True

    def abandon(self) -> Reservation | None:
        """The caller was cancelled: what the thread delivered already (the caller releases),
        else ``None`` (the thread will)."""
        with self._lock:
            self._abandoned = True
            return self._delivered


def _log_orphaned_failure(what: str, of: object, done: asyncio.Future[Any]) -> None:
    """Log the error of an async twin's job (``what``, of a reservation or request id ``of``)
    that ran on after its caller was cancelled."""
    if not done.cancelled() and (error := done.exception()) is not None:
        request_id = getattr(of, "request_id", of)
        logger.error(
            "%s of request %s, run after its caller was cancelled, failed: %s: %s",
            what,
            "(no id)" if request_id is None else repr(request_id)[:80],
            type(error).__name__,
            error,
            exc_info=error,
        )


def check_budget_options(ledger: object, *, counts: Mapping[str, object], **names: object) -> None:
    """Validate what every budget adapter is built with: a :class:`Ledger`, ids (``names``) that are
    non-empty strings, a ``model`` among them known to the ledger's registry, and ``counts`` that
    are non-negative integers (``None`` leaves one unset).

    Raises:
        InvalidInputError: A bad option, named.
        UnknownModelError: ``model`` is not in the ledger's registry (here, not on the first call).
    """
    if not isinstance(ledger, Ledger):
        raise InvalidInputError("ledger", "must be a tokenbudget Ledger", value=ledger)
    for name, value in names.items():
        if value is not None and (not isinstance(value, str) or not value):
            raise InvalidInputError(name, "must be a non-empty string", value=value)
    model = names.get("model")
    if isinstance(model, str):
        ledger.registry.get(model)
    for name, value in counts.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise InvalidInputError(name, "must be a non-negative integer", value=value)


def check_context_options(ledger: object, *, feature: object, user: object) -> None:
    """Validate the ``ledger=``, ``feature=`` and ``user=`` of a memory or window that acts on the
    ladder's ``smaller_context`` step (:meth:`Ledger.context_tokens`): no ledger (the budget is
    fixed) and no ids, or a :class:`Ledger` with ids that are non-empty strings or ``None``.

    Raises:
        InvalidInputError: ``ledger`` is not a Ledger, an id is not a non-empty string, or an id
            is given without a ledger (it would be read by nothing).
    """
    if ledger is not None:
        check_budget_options(ledger, counts={}, feature=feature, user=user)
        return
    for name, value in (("feature", feature), ("user", user)):
        if value is not None:
            raise InvalidInputError(
                name,
                "names whose budget the ledger reads, and no ledger was given",
                value=value,
                fix="pass ledger=... with it (from_dict(data, ledger=...) for a saved memory), or drop it",
            )


_MAX_CALL_SAMPLES = 1_000
"""The most cost samples one commit of several calls (``Usage.requests``) records."""


def _default_output(cap: int | None, model_max: int | None) -> int | None:
    """The worst-case output of a call that names none: the feature's per-call cap or what the
    model can produce, whichever is smaller (a feature's one cap serves models of several sizes;
    a cap of 0, a feature with no output, is a cap), ``None`` when neither is known."""
    if cap is None:
        return model_max
    return cap if model_max is None else min(cap, model_max)


def _priced_minute(reservation: Reservation) -> int | None:
    """The minute ``reservation`` was priced at (``None``: made by hand, priced at commit).

    Raises:
        InvalidInputError: A hand-made reservation's ``priced_minute`` is not an int.
    """
    minute = reservation.priced_minute
    if minute is None or type(minute) is int:
        return minute
    raise InvalidInputError(
        "reservation.priced_minute",
        f"must be an int (epoch minutes) or None, got {type(minute).__name__}",
        value=minute,
        fix="settle the Reservation that reserve() returned",
    )


def _check_reservation(reservation: object) -> None:
    """``reservation`` is one ``reserve()`` returned, or a hand-made one (a server rebuilding a
    reservation from its id) whose fields the ledger could have written: its spend is filed
    under its ``day`` and its held figures are given back, so none of them is taken on trust.

    Raises:
        InvalidInputError: It is not a :class:`Reservation`; or, named ``reservation.<field>``,
            its request id is empty, its ``day`` is no ``YYYY-MM-DD`` date, a token figure is not
            a non-negative int, ``reserved_usd`` is not ``None`` or a finite non-negative
            ``Decimal``, or ``step`` is not a ladder step.
    """
    if not isinstance(reservation, Reservation):
        raise InvalidInputError("reservation", "must be the Reservation that reserve() returned")
    fix = "settle the Reservation that reserve() returned"
    if type(reservation.request_id) is not str or not reservation.request_id:  # one made by hand
        raise InvalidInputError(
            "reservation.request_id",
            "must be a non-empty string id: under an empty one a retry could not be told from a new call",
            value=reservation.request_id,
            fix=fix,
        )
    day = reservation.day
    if type(day) is not str or day not in _DAYS_CHECKED:  # (a few days a process: each checked once)
        if type(day) is not str or _ISO_DAY.fullmatch(day) is None or not _is_date(day):
            problem = "must be the day the ledger reserved it on (YYYY-MM-DD): its spend is filed under it"
            raise InvalidInputError("reservation.day", problem, value=day, fix=fix)
        if len(_DAYS_CHECKED) > 1_000:
            _DAYS_CHECKED.clear()
        _DAYS_CHECKED.add(day)
    for name in ("input_tokens", "max_output_tokens"):
        n = getattr(reservation, name)
        if type(n) is not int or n < 0:  # (a bool is no int here, nor is an int subclass)
            raise InvalidInputError(f"reservation.{name}", "must be a non-negative int", value=n, fix=fix)
    usd = reservation.reserved_usd
    if usd is not None and (not isinstance(usd, Decimal) or not usd.is_finite() or usd < 0):
        problem = "must be None or a finite, non-negative Decimal"
        raise InvalidInputError("reservation.reserved_usd", problem, value=usd, fix=fix)
    if reservation.step not in STEPS:
        raise InvalidInputError(
            "reservation.step", f"must be one of {list(STEPS)}", value=reservation.step, fix=fix
        )


_ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DAYS_CHECKED: set[str] = set()
"""Reservation days already found to be ``YYYY-MM-DD`` dates (exact ``str`` objects only)."""


def _is_date(day: str) -> bool:
    try:
        date.fromisoformat(day)
    except ValueError:
        return False
    return True


def _per_call_costs(cost: int, requests: int) -> list[int]:
    """``cost`` split over ``requests`` calls, one sample each (exact sum), or at most
    :data:`_MAX_CALL_SAMPLES` samples of the average call."""
    if requests <= 0:
        return []
    share, left = divmod(cost, requests)
    if requests > _MAX_CALL_SAMPLES:
        return [share + (2 * left >= requests)] * _MAX_CALL_SAMPLES
    return [share + 1] * left + [share] * (requests - left)


_MAX_AMOUNT = 2**53 - 1
"""The largest figure a ledger takes (tokens, or nano-USD: ~$9M): every store holds it exactly (Redis
compares in doubles), so each refuses the same calls, before any store is asked."""

_COMMIT_FIELDS = ("input_tokens", "output_tokens", "requests")


def _out_of_range(field: str, at: object) -> InvalidInputError:
    return InvalidInputError(
        field,
        "is out of range: it has no calendar date (year 1 to 9999) in UTC and the ledger's time zone",
        value=at,
        fix="pass when the call happened (epoch seconds or an aware datetime)",
    )


def _batch(field: str, batch: object, of: str) -> Iterable[Any]:
    """``batch`` when it is a list (or another iterable) of calls, checked before it is iterated:
    a string would be taken character by character, a dict or set by its keys.

    Raises:
        InvalidInputError: Named ``field``.
    """
    if isinstance(batch, str | bytes | bytearray | memoryview | Mapping | AbstractSet) or not isinstance(
        batch, Iterable
    ):
        raise InvalidInputError(
            field, f"must be a list of {of}, got {type(batch).__name__}", value=batch,
            fix="pass a list, one entry per call",
        )  # fmt: skip
    return batch


def clock_out_of_range(now: object) -> InvalidInputError:
    """The error of a ledger clock's reading ``now`` that is no time with a date (reports too)."""
    reading = f"{now:.6g}" if isinstance(now, float) or (type(now) is int and finite(now)) else repr(now)[:40]
    return InvalidInputError(
        "clock",
        f"returned {reading}, which is no time with a calendar date (year 1 to 9999) in the "
        "ledger's time zone: is it milliseconds or nanoseconds?",
        value=now,
        fix="return epoch seconds, e.g. time.time",
    )


def _too_large(field: str, what: str, value: object) -> InvalidInputError:
    return InvalidInputError(
        field,
        f"{what}, more than a ledger stores (2**53 - 1 tokens or nano-USD, about $9 million)",
        value=value,
        fix="check the figure: a real call is far smaller",
    )


def _check_commit_figures(usage: Usage, cache_hit: object) -> None:
    """What a commit's fast check found wrong, named (``usage`` is a :class:`Usage`).

    Raises:
        InvalidInputError: ``cache_hit`` is not a bool, or a figure of ``usage`` is too large.
    """
    if not isinstance(cache_hit, bool):
        raise InvalidInputError(
            "cache_hit",
            "must be True or False",
            value=cache_hit,
            fix="pass a bool (the answer came from a cache)",
        )
    for name in _COMMIT_FIELDS:
        value = getattr(usage, name)
        if value > _MAX_AMOUNT:
            raise _too_large(f"usage.{name}", f"is {value:,}", value)
    total = usage.input_tokens + usage.output_tokens + usage.requests
    raise _too_large("usage", f"adds up to {total:,} tokens and requests", usage)


def _check_call_figures(usage: Usage, cache_hit: bool, saved_usd: Decimal | None) -> None:
    """What a commit's figures say that no call can (each report row would contradict itself).

    Raises:
        InvalidInputError: ``usage`` has tokens, or is a cache hit, but covers no call
            (``requests=0``: its payer would spend without being an active user, its feature
            would have cost without a p50/p95 sample); or ``saved_usd`` is given without
            ``cache_hit`` (a saving is what a cache hit saved: it would be reported as saved
            by no hit).
    """
    if usage.requests == 0:
        what = f"{usage.input_tokens + usage.output_tokens:,} tokens" if not cache_hit else "a cache hit"
        raise InvalidInputError(
            "usage.requests",
            f"is 0 but the usage is {what}: usage is charged per call",
            value=0,
            fix="set requests to the number of calls the usage covers (1 for one call)",
        )
    raise InvalidInputError(
        "saved_usd",
        "is given without cache_hit=True: a saving is what an answer from a cache saved",
        value=saved_usd,
        fix="pass cache_hit=True for an answer served from a cache, else leave saved_usd unset",
    )


def refuses_usage(error: InvalidInputError) -> bool:
    """Whether ``error``, raised by :meth:`Ledger.commit` or :meth:`Ledger.record`, refused the
    usage's figures (beyond what a ledger stores) rather than another argument. A caller charging
    a call that already went out charges its estimate instead, as :meth:`Ledger.settle` does."""
    return error.field == "usage" or error.field.startswith("usage.")


def _sample_keys(
    feature: str, priced: bool, overhead: bool, requests: int, hit: bool = False
) -> tuple[str | None, str | None]:
    """Where a commit's cost samples for its feature's p50/p95 go (``feature`` encoded):
    ``(call_cost_key, per_call_key)``, the store recording one call's sample with the commit, or
    the ledger one sample per call after it (a commit of several calls; none for none). None for
    an unknown price, nor for the package's own overhead calls (a summary is not a call of the
    feature's users), nor for cache hits (an answer from a cache is not a model call: its $0
    would pull a feature's p50 to nothing once half its answers are hits)."""
    key = feature if priced and not overhead and not hit else None
    return (key, None) if requests == 1 else (None, key)


def _call_rollup(
    usage: Usage,
    cost: int,
    *,
    cache_hit: bool = False,
    saved: int = 0,
    overhead: bool = False,
    unpriced: bool = False,
) -> dict[str, int]:
    """The attribution counters every commit moves (``cost`` in nano-USD, 0 when ``unpriced``).

    Usage of several calls (``usage.requests``) counts as that many calls in every per-call
    counter: hits, estimated and unpriced calls alike."""
    calls = usage.requests
    return {
        "requests": calls,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "cost_nanos": cost,
        "cache_hits": calls if cache_hit else 0,
        "saved_nanos": saved,
        "overhead_nanos": cost if overhead else 0,
        "estimated": calls if usage.estimated else 0,
        "unpriced": calls if unpriced else 0,
    }


def _unknown_model_option(value: object) -> bool:
    """Whether an ``unknown_model`` option says to charge an unknown model unpriced.

    Raises:
        InvalidInputError: It is neither ``"error"`` nor ``"unpriced"``.
    """
    if value not in ("error", "unpriced"):
        raise InvalidInputError("unknown_model", f"unknown value {value!r}", fix="use 'error' or 'unpriced'")
    return value == "unpriced"


def _check_ids(**ids: object) -> None:
    """Ids are strings (or ``None``) that UTF-8 can encode; a ``feature``, ``user`` or
    ``request_id`` is not empty (``None`` says there is none).

    Raises:
        InvalidInputError: One is not, named.
    """
    for name, value in ids.items():
        if value is not None and not isinstance(value, str):
            raise InvalidInputError(
                name, "must be a string id (or None)", value=value, fix=f"pass str({name})"
            )
        if name in ("feature", "user") and value == "":  # the anonymous payer's scopes (None's)
            raise InvalidInputError(
                name,
                f"must not be empty: an empty {name} would be charged to the budgets of calls "
                f"without one (None), with every other call passing {name}=''",
                value=value,
                fix=f"pass the {name}'s id, or None when there is none",
            )
        if name == "request_id" and value == "":  # read as "none", a retry would be charged again
            raise InvalidInputError(
                name,
                "must not be empty: an empty idempotency key cannot tell a retry from a new call",
                value=value,
                fix="pass one unique id per call (the same for its retries), or None to have one drawn",
            )
        if isinstance(value, str) and _unencodable(value):
            raise InvalidInputError(
                name,
                "holds characters UTF-8 cannot encode (lone surrogates, as os.fsdecode or "
                "errors='surrogateescape' leave for undecodable bytes)",
                value=value,
                fix="decode the id's bytes strictly (or with errors='replace') before passing it",
            )


def _unencodable(*ids: str | None) -> bool:
    """Some id holds what UTF-8 cannot encode (stores and keys hold ids as UTF-8)."""
    for value in ids:
        if value is not None and not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:
                return True
    return False


# Positional constructors of the hot path's value objects (same objects, built faster).
_new_reserve_request = positional_maker(ReserveRequest)
_new_commit_request = positional_maker(CommitRequest)
