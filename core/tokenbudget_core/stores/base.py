"""The storage contract of the ledger: a few atomic operations, the same on every backend.

The :class:`~tokenbudget_core.ledger.Ledger` decides *what* to check and charge; a store
only makes each operation atomic (and durable where it can). Every backend implements
exactly these semantics, checked by one shared test suite:

``reserve(req)``
    Atomically: expire the day's reservations whose lease has passed (their amounts are
    released); if ``req.request_id`` already exists for that day, return its outcome
    unchanged (idempotent); otherwise, for each :class:`Check`, ``spent + reserved + amount``
    must stay ``<= limit`` (a limit of ``None`` only records). On the first failing check
    nothing changes and the outcome names it; otherwise every amount is added to
    ``reserved`` and the reservation is recorded with its lease.

``commit(req)``
    Atomically, once per ``(day, request_id)``: if the request was reserved, its reserved
    amounts are removed; the actual amounts are added to ``spent`` and the attribution
    counters are incremented. A second commit changes nothing (``applied=False``). A commit
    after a release or an expiry, or with no reservation at all, still charges the usage:
    the call happened, and usage is never lost. A commit naming a ``conversation_mark`` (sent
    only to a store that sets ``commits_conversation_marks = True``: memory, SQLite, Redis)
    also sets that once-mark if it is not set (it holds :data:`CONVERSATION_MARK_TTL_S`), and
    adds 1 to the row's ``conversations`` counter when this commit set it, in the same atomic
    step: a process killed before its commit leaves the conversation to be counted by the next
    call of it, never marked and uncounted. A commit that does not apply sets no mark.

``release(day, request_id)``
    Removes a live reservation's amounts; a no-op for committed, released, expired or
    unknown requests. Releasing twice changes nothing.

Reads have a batched form a store may add (it is optional: :func:`call_costs_many` falls back
to one read per pair, so a store without it still honours the contract):

``call_costs_many(pairs)``
    :meth:`LedgerStore.call_costs` of every ``(day, feature)`` pair at once (a report reads
    thousands), in as few round trips or queries as the backend allows: a dict with every
    pair given, each pair's costs exactly as ``call_costs(day, feature)`` returns them.

and a snapshot form, read in bounded chunks (optional too: without it,
:func:`snapshot_call_costs` reads everything with ``call_costs_many``), that a report uses to
work out percentiles of millions of calls without holding them all:

``call_cost_counts(pairs)``
    How many costs each ``(day, feature)`` pair has recorded now: a dict with every pair given.
``scan_call_costs(counts, size)``
    The first ``counts[pair]`` costs of each pair (what ``call_costs`` returns, cut to that
    length: costs are only ever appended, so a snapshot's counts read the same costs later),
    as ``(pair, costs)`` chunks of at most ``size`` costs, pairs in the order given (a pair may
    come in several chunks). A pair whose costs were purged since gives fewer, never others.

A store may also add a once-mark that remembers who set it (optional as well:
:func:`mark_once_for` falls back to ``mark_once``):

``mark_once_for(key, ttl_s, holder)``
    As ``mark_once``, and also True when the mark is set and ``holder`` set it: the same
    request asking again (a spool replay cut short between the mark and the commit) gets the
    same answer, so its conversation is counted once, not lost.

Amounts are integers: tokens, or money in nano-USD (see :mod:`tokenbudget_core.money`).
Scope keys are opaque strings built by the ledger from *encoded* ids (a user id can never
forge another scope's key).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeAlias, runtime_checkable
from urllib.parse import unquote

from tokenbudget_core.errors import InvalidInputError

__all__ = [
    "Check",
    "CONVERSATION_MARK_TTL_S",
    "CommitOutcome",
    "CommitRequest",
    "LedgerStore",
    "ReserveOutcome",
    "ReserveRequest",
    "RollupRow",
    "RequestState",
    "CallCostSnapshot",
    "call_costs_many",
    "commits_conversation_marks",
    "mark_once_for",
    "snapshot_call_costs",
]

Metric: TypeAlias = Literal["tokens", "nanos"]
CostPair: TypeAlias = tuple[str, str]
"""``(day, feature)``: whose call costs to read (see :func:`call_costs_many`)."""
RequestState: TypeAlias = Literal["reserved", "committed", "released", "expired"]

ROLLUP_FIELDS = (
    "requests",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_nanos",
    "cache_hits",
    "saved_nanos",
    "overhead_nanos",
    "estimated",
    "unpriced",
    "conversations",
    "routed_requests",
    "routing_saved_nanos",
    "overhead_requests",
    "overhead_cache_hits",
)
"""The attribution counters the ledger keeps per day x feature x user x model (stores accept any names).

``routed_requests`` counts routed calls and ``routing_saved_nanos`` adds what each saved against
its premium tier (signed: it can be negative). Both are only written by routed calls;
``overhead_requests`` (the package's own calls: summaries, classifiers, embeddings) and
``overhead_cache_hits`` only by overhead calls. A row without them (older data included) reads as 0."""


CONVERSATION_MARK_TTL_S = 3 * 86_400
"""How long the once-mark that counts a conversation once per day and feature holds (seconds):
a few days, so a commit late by a day or two still finds it, and the marks do not grow with
every conversation ever held."""


def commits_conversation_marks(store: object) -> bool:
    """Whether ``store`` sets a commit's ``conversation_mark`` in the commit's own atomic step
    (a store declares it with ``commits_conversation_marks = True``); the ledger asks any other
    store's ``mark_once`` before the commit."""
    return getattr(store, "commits_conversation_marks", False) is True


Keys: TypeAlias = tuple[tuple[str, Metric], ...]
"""``(scope, metric)`` per budget, in the order of a store fast path's amounts and limits (the
ledger's lane: :meth:`MemoryStore.reserve_cells <.memory.MemoryStore.reserve_cells>`,
:meth:`RedisStore.reserve_keyed <.redis.RedisStore.reserve_keyed>`)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Check:
    """One budget a request touches: ``spent + reserved + amount <= limit``."""

    scope: str
    """Opaque scope key, e.g. ``user/<feature>/<user>`` with encoded ids."""
    metric: Metric
    """``tokens`` or ``nanos`` (nano-USD)."""
    amount: int
    """What this request reserves (or, in a commit, charges)."""
    limit: int | None = None
    """The budget; ``None`` records without limiting."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ReserveRequest:
    """An atomic reservation against several budgets."""

    day: str
    request_id: str
    checks: Sequence[Check]
    now_ms: int
    """The current time (epoch milliseconds), for lease expiry."""
    lease_ms: int
    """How long the reservation holds if never settled."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ReserveOutcome:
    """What a reservation did."""

    ok: bool
    """True when reserved (or already reserved/settled with this id)."""
    state: RequestState | None = None
    """The request's state after the call (``None`` when refused)."""
    failed: Check | None = None
    """The first check that did not fit (when refused)."""
    used: int = 0
    """``spent + reserved`` of the failed check's scope before this request."""
    duplicate: bool = False
    """True when the request id was already known (nothing changed)."""
    usage: tuple[int, ...] = ()
    """``spent + reserved`` per check after this reservation, in check order (optional: a store
    that fills it saves the ledger a ``totals`` round trip for the degradation ladder)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class CommitRequest:
    """An atomic, idempotent charge of actual usage."""

    day: str
    request_id: str
    charges: Sequence[Check]
    """Actual amounts per scope (``limit`` is ignored)."""
    rollup_key: str
    """Opaque ``feature/user/model`` key (encoded ids) of the attribution row."""
    rollup: Mapping[str, int]
    """Counter increments, a subset of :data:`ROLLUP_FIELDS`; an increment may be negative
    (``routing_saved_nanos``)."""
    now_ms: int
    call_cost_key: str | None = None
    """When set, the store also records ``rollup["cost_nanos"]`` as one call's cost under
    ``(day, call_cost_key)`` in the same operation (see :meth:`LedgerStore.call_costs`)."""
    conversation_mark: str | None = None
    """The once-mark that counts the call's conversation once per day and feature, set in the
    same operation (see ``commit`` above; only a store with ``commits_conversation_marks`` is
    sent one)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class CommitOutcome:
    """What a commit did."""

    applied: bool
    """False when this request id had already been committed (nothing changed)."""
    previous: RequestState | None
    """The request's state before the commit (``None``: never reserved)."""
    spent: tuple[int, ...] = ()
    """``spent`` per charge after the commit, in charge order (optional: saves the ledger a
    ``totals`` round trip for alerts)."""
    recorded_cost: bool = False
    """True when the store recorded the call cost (``call_cost_key``) in this operation."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RollupRow:
    """Attribution counters of one day x feature x user x model."""

    day: str
    rollup_key: str
    values: Mapping[str, int] = field(default_factory=dict)


def check_days(days: object) -> list[str]:
    """``days`` (of :meth:`LedgerStore.rollup`) as a list of day strings.

    Raises:
        InvalidInputError: ``days`` is a string (``rollup("2026-11-24")`` would look up one day
            per character and find nothing) or holds something other than strings.
    """
    if isinstance(days, str | bytes) or not isinstance(days, Sequence | set | frozenset):
        raise InvalidInputError(
            "days",
            f"must be a list of days (YYYY-MM-DD), got {type(days).__name__}",
            value=days,
            fix="pass a list: rollup([ledger.day()])",
        )
    found = list(days)
    for i, day in enumerate(found):
        if not isinstance(day, str):
            raise InvalidInputError(
                f"days[{i}]", f"must be a day string (YYYY-MM-DD), got {type(day).__name__}", value=day
            )
    return found


@runtime_checkable
class LedgerStore(Protocol):
    """A backend for the ledger (memory, SQLite, Redis)."""

    url: str

    def reserve(self, req: ReserveRequest) -> ReserveOutcome:
        """See the module docstring."""
        ...

    def commit(self, req: CommitRequest) -> CommitOutcome:
        """See the module docstring."""
        ...

    def release(self, day: str, request_id: str, now_ms: int, *, forget: bool = False) -> bool:
        """Release a live reservation; True if something was released.

        An unknown id is remembered as released (a reserve arriving late under it holds
        nothing). With ``forget``, a live reservation is given back and its id forgotten, and
        nothing else changes: the ledger's answer to a reservation it refused after making it
        (a soft refusal), so that a retry under the same id is a new reservation."""
        ...

    def totals(
        self, day: str, scopes: Sequence[tuple[str, Metric]], now_ms: int
    ) -> dict[tuple[str, Metric], tuple[int, int]]:
        """``(spent, reserved)`` per scope and metric (expired leases excluded)."""
        ...

    def rollup(self, days: Sequence[str]) -> list[RollupRow]:
        """Attribution rows of these days."""
        ...

    def mark_once(self, key: str, ttl_s: int) -> bool:
        """Set ``key`` if absent (for once-per-day alerts); True when this call set it."""
        ...

    def record_call_cost(self, day: str, feature: str, cost_nanos: int) -> None:
        """Keep one call's cost for percentile reports (p50/p95 per feature and day)."""
        ...

    def call_costs(self, day: str, feature: str) -> list[int]:
        """The recorded call costs of a feature and day."""
        ...

    # Optional (see the module docstring and :func:`call_costs_many`), so not declared here:
    # def call_costs_many(self, pairs: Sequence[CostPair]) -> dict[CostPair, list[int]]

    def ping(self) -> None:
        """Raise if the store cannot be reached."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def mark_once_for(store: LedgerStore, key: str, ttl_s: int, holder: str) -> bool:
    """Set the once-mark ``key`` for ``holder``: True when this call set it, or when ``holder``
    set it before (a store with a ``mark_once_for`` method of its own: memory, SQLite, Redis);
    any other store answers with its ``mark_once`` (True only for the call that set it).

    Args:
        store: Any ledger store.
        key: The mark.
        ttl_s: How long the mark holds, in seconds.
        holder: Who sets it (a spooled commit: its day and request id).

    Example:
        >>> from tokenbudget_core.stores.memory import MemoryStore
        >>> store = MemoryStore()
        >>> mark_once_for(store, "conv", 60, "r1"), mark_once_for(store, "conv", 60, "r1")
        (True, True)
        >>> mark_once_for(store, "conv", 60, "r2"), store.mark_once("conv", 60)
        (False, False)
    """
    own: Callable[[str, int, str], bool] | None = getattr(store, "mark_once_for", None)
    if own is not None:
        return own(key, ttl_s, holder)
    return store.mark_once(key, ttl_s)


def check_cost_pairs(pairs: object) -> list[CostPair]:
    """``pairs`` checked, duplicates dropped (first occurrence kept, in order).

    Raises:
        InvalidInputError: ``pairs`` is not a sequence of ``(day, feature)`` string pairs.
    """
    if isinstance(pairs, str | bytes) or not isinstance(pairs, Sequence):
        raise InvalidInputError(
            "pairs",
            "must be a sequence of (day, feature) pairs",
            value=pairs,
            fix="e.g. [('2026-11-23', 'chat')]",
        )
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise InvalidInputError(
                f"pairs[{i}]", "must be a (day, feature) tuple of two strings", value=pair
            )
    return list(dict.fromkeys(pairs))


def call_costs_many(store: LedgerStore, pairs: Sequence[CostPair]) -> dict[CostPair, list[int]]:
    """The recorded call costs of every ``(day, feature)`` pair, read the fastest way ``store`` has.

    A store with a ``call_costs_many`` method of its own (SQLite, Redis: a few queries or
    round trips for thousands of pairs) answers at once; any other store is read one pair at a
    time with :meth:`LedgerStore.call_costs`. Either way each pair's list is what
    ``store.call_costs(day, feature)`` returns (empty when nothing was recorded).

    Args:
        store: Any ledger store.
        pairs: ``(day, feature)`` pairs (``feature`` as the ledger encodes it); duplicates are
            read once.

    Returns:
        A dict with every pair given, in the order given.

    Raises:
        InvalidInputError: ``pairs`` is not a sequence of pairs of strings.
        BudgetUnavailableError: The store cannot be reached.

    Example:
        >>> from tokenbudget_core.stores.memory import MemoryStore
        >>> store = MemoryStore()
        >>> store.record_call_cost("2026-11-23", "chat", 7)
        >>> call_costs_many(store, [("2026-11-23", "chat"), ("2026-11-24", "chat")])
        {('2026-11-23', 'chat'): [7], ('2026-11-24', 'chat'): []}
    """
    wanted = check_cost_pairs(pairs)
    many: Callable[[Sequence[CostPair]], dict[CostPair, list[int]]] | None = getattr(
        store, "call_costs_many", None
    )
    if many is not None:
        return many(wanted)
    return {pair: store.call_costs(*pair) for pair in wanted}


SCAN_CHUNK = 16_384
"""Costs one chunk of :meth:`CallCostSnapshot.scan` carries at most, by default."""

CostScan: TypeAlias = Callable[[Mapping[CostPair, int], int], Iterator[tuple[CostPair, list[int]]]]
"""A store's ``scan_call_costs``: ``(counts, size)`` to ``(pair, costs)`` chunks."""


class CallCostSnapshot:
    """The call costs of some ``(day, feature)`` pairs as they were when it was taken: how many
    each had (:attr:`counts`) and a read of exactly those (:meth:`scan`), as often as needed.

    Made by :func:`snapshot_call_costs`. Calls recorded after it are not in it, so several
    passes over it (as :func:`tokenbudget_core.percentiles.nearest_ranks` makes) see the same
    costs.
    """

    __slots__ = ("_scan", "counts")

    def __init__(self, counts: Mapping[CostPair, int], scan: CostScan) -> None:
        self.counts: dict[CostPair, int] = dict(counts)
        """Costs per pair at the snapshot, for every pair asked for."""
        self._scan = scan

    def count(self, pairs: Sequence[CostPair]) -> int:
        """How many costs these pairs have in the snapshot."""
        return sum(self.counts[pair] for pair in pairs)

    def scan(self, pairs: Sequence[CostPair], size: int = SCAN_CHUNK) -> Iterator[tuple[CostPair, list[int]]]:
        """The snapshot's costs of ``pairs`` (each one of the snapshot's pairs), as
        ``(pair, costs)`` chunks of at most ``size`` costs, in recording order within a pair.

        Raises:
            InvalidInputError: A pair is not in the snapshot, or ``size`` is not a positive int.
            BudgetUnavailableError: The store cannot be reached.
        """
        if type(size) is not int or size < 1:
            raise InvalidInputError("size", "must be a whole number >= 1", value=size)
        for pair in pairs:
            if pair not in self.counts:
                raise InvalidInputError(
                    "pairs",
                    "names a pair the snapshot was not taken of",
                    value=pair,
                    fix="take the snapshot with every pair you will scan",
                )
        wanted = {pair: self.counts[pair] for pair in pairs if self.counts[pair]}
        return self._scan(wanted, size) if wanted else iter(())


def snapshot_call_costs(store: LedgerStore, pairs: Sequence[CostPair]) -> CallCostSnapshot:
    """A :class:`CallCostSnapshot` of the call costs of ``pairs``, read the way ``store`` allows.

    A store with ``call_cost_counts`` and ``scan_call_costs`` (memory, SQLite, Redis) counts now
    and reads later, in chunks, so a caller never holds more than it asks for. Any other store is
    read at once with :func:`call_costs_many` (held in the snapshot).

    Args:
        store: Any ledger store.
        pairs: ``(day, feature)`` pairs (``feature`` as the ledger encodes it); duplicates are
            counted once.

    Raises:
        InvalidInputError: ``pairs`` is not a sequence of pairs of strings.
        BudgetUnavailableError: The store cannot be reached.

    Example:
        >>> from tokenbudget_core.stores.memory import MemoryStore
        >>> store = MemoryStore()
        >>> for cost in (5, 7, 9):
        ...     store.record_call_cost("2026-11-23", "chat", cost)
        >>> snap = snapshot_call_costs(store, [("2026-11-23", "chat")])
        >>> store.record_call_cost("2026-11-23", "chat", 11)
        >>> snap.counts, list(snap.scan([("2026-11-23", "chat")], size=2))
        ({('2026-11-23', 'chat'): 3}, [(('2026-11-23', 'chat'), [5, 7]), (('2026-11-23', 'chat'), [9])])
    """
    wanted = check_cost_pairs(pairs)
    counts: Callable[[Sequence[CostPair]], dict[CostPair, int]] | None = getattr(
        store, "call_cost_counts", None
    )
    scan: CostScan | None = getattr(store, "scan_call_costs", None)
    if counts is not None and scan is not None:
        return CallCostSnapshot(counts(wanted), scan)
    held = call_costs_many(store, wanted)

    def scan_held(counts: Mapping[CostPair, int], size: int) -> Iterator[tuple[CostPair, list[int]]]:
        for pair, n in counts.items():
            for start in range(0, n, size):
                yield pair, held[pair][start : min(start + size, n)]

    return CallCostSnapshot({pair: len(costs) for pair, costs in held.items()}, scan_held)


_SECRET_NAME = re.compile(r"pass|pwd|secret|token|key|auth|cred|sig", re.IGNORECASE)
"""A query parameter whose name contains one of these carries a secret (``password``,
``ssl_password``, ``api_key``, ``auth_token``, ``sig``...): its value is never shown."""
_SECRET_PARAM = re.compile(r"([?&;])([^=&;#?]*)=([^&;#]*)")
_HOSTS = r"(?:\[[^\]]*\]|[^:\[\],/?#@]*)(?::\d*)?(?:,(?:\[[^\]]*\]|[^:\[\],/?#@]*)(?::\d*)?)*"
"""``host[:port]``, IPv6 in brackets, or a cluster's comma-separated list of them."""
_HOST_PORT = re.compile(_HOSTS)
_HOST_THEN_PATH = re.compile(_HOSTS + r"(?=[/?#;]|$)")


def _redact_query(text: str) -> str:
    def mask(m: re.Match[str]) -> str:
        name = unquote(m.group(2))
        return f"{m.group(1)}{m.group(2)}=***" if _SECRET_NAME.search(name) else m.group(0)

    return _SECRET_PARAM.sub(mask, text)


def _redact_userinfo(userinfo: str) -> str:
    if ":" not in userinfo:
        return userinfo
    return userinfo.split(":", 1)[0] + ":***"


def redact_url(url: str) -> str:
    """A store URL without its secrets, for messages and reports (``redis://u:***@host``).

    The userinfo's password and the value of every query parameter whose name looks like a
    secret (``password``, ``pass``, ``pwd``, ``secret``, ``token``, ``key``, ``auth``..., in any
    case) are replaced by ``***``. Malformed URLs are redacted too (a password holding ``/`` or
    ``@``); this never raises.

    Example:
        >>> redact_url("redis://app:s3cret@cache:6379/0?password=s3cret&socket_timeout=1")
        'redis://app:***@cache:6379/0?password=***&socket_timeout=1'
    """
    if not isinstance(url, str):
        return "<not a URL>"
    scheme, sep, rest = url.partition("://")
    if not sep:  # no authority: anything before an '@' may be a credential
        rest = url
        end = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
        at = rest.rfind("@", 0, end)
        return _redact_query(rest if at < 0 else "***" + rest[at:])
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    at = rest.rfind("@", 0, end)
    if at < 0 and not _HOST_PORT.fullmatch(rest[:end]):
        # Not host[:port]: a password holding an unencoded '/', '?' or '#' ("u:pa/ss@host"),
        # whose userinfo ends at the first later '@' that a host follows.
        at = next((m.start() for m in re.finditer("@", rest) if _HOST_THEN_PATH.match(rest, m.end())), -1)
    if at < 0:
        return f"{scheme}://{_redact_query(rest)}"
    return f"{scheme}://{_redact_userinfo(rest[:at])}@{_redact_query(rest[at + 1 :])}"
