"""What the ledger hands out and how it plans its work: the values of one call and the plans behind them.

:class:`Reservation` (a reserved worst case), :class:`Charge` (what a commit charged),
:class:`BudgetCheck` (what a reservation would do, nothing held) and :class:`BudgetState`
(where a payer's budgets stand) are the public values of
:class:`~tokenbudget_core.ledger.Ledger`. The rest is the ledger's own machinery, kept apart so
``ledger.py`` holds only the rules: the plans of one reserve or commit before a store sees them,
the budgets one payer touches, the driver of operations written as store steps, the checks of
``commit_many`` items, and the default spool location.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from ._frozen import positional_maker
from .budgets import Step
from .errors import BudgetUnavailableError, InvalidInputError, StoreRefusedError, UnknownModelError
from .price_overrides import PriceTable
from .registry import ModelRegistry
from .stores.base import Check, LedgerStore, Metric
from .usage import Usage

__all__ = ["BudgetCheck", "BudgetState", "Charge", "Reservation", "default_spool_path"]

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True, slots=True)
class Reservation:
    """A reserved worst case, to commit or release."""

    request_id: str
    day: str
    model: str
    feature: str | None
    user: str | None
    conversation: str | None
    overhead: str | None
    input_tokens: int
    max_output_tokens: int
    """The worst-case output reserved, over all the call's choices."""
    reserved_usd: Decimal | None
    """The worst-case cost reserved (``None`` for an unpriced model under token budgets only)."""
    step: Step
    """Where the tightest budget stands on the degradation ladder: ``normal``, ``cheaper_tier`` or
    ``smaller_context`` (a granted call is never at a refusing step: ``cache_only`` and
    ``soft_refusal`` are refused, unless the ladder skips them; see
    :class:`~tokenbudget_core.budgets.Ladder` for who acts on each step)."""
    unchecked: bool = False
    """True when the store was unreachable and ``on_unavailable="open"`` let the call through."""
    held: tuple[tuple[tuple[str, Metric, int | None], ...], tuple[int, ...]] = field(
        default=((), ()), repr=False, compare=False
    )
    """``(budgets, amounts)``: the ``(scope, metric, limit)`` of each budget the reservation holds
    and the amount it holds there (see :attr:`checks`)."""
    priced_minute: int | None = field(default=None, repr=False, compare=False)
    """When the worst case was priced: epoch minutes by the ledger's clock. Its commit prices
    the call's usage at the same minute (a provider prices a call by when it lands, and a
    price that changed meanwhile, as DeepSeek's peak hours, must not take the call past the
    limit its reservation checked); ``None`` (a reservation made by hand) prices at commit."""

    @property
    def checks(self) -> tuple[Check, ...]:
        """What the reservation holds, per budget: its scope, metric, amount and limit."""
        return _checks_of(*self.held)


@dataclass(frozen=True, kw_only=True, slots=True)
class Charge:
    """What a commit charged."""

    request_id: str
    usage: Usage
    cost_usd: Decimal | None
    """``None`` when the model has no known price (counted as unpriced, never as $0), and when
    nothing was charged (``applied`` false, not ``spooled``: the id was committed before, with
    whatever usage that first commit carried)."""
    applied: bool
    """False when this request id had already been committed (or the usage waits in the spool)."""
    spooled: bool = False
    """True when the store was unreachable and the usage waits in the local spool."""
    routing_saved_usd: Decimal | None = None
    """For a routed call (``premium_model`` given): the same usage priced on the premium model
    minus its cost, negative when the call cost more than the premium model would have; ``None``
    for a call that was not routed or when either price is unknown (see :meth:`Ledger.commit`)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class BudgetCheck:
    """What :meth:`Ledger.reserve` would do for a call now, with nothing held (see :meth:`Ledger.check`)."""

    step: Step
    """Where the tightest budget would stand on the degradation ladder with the call reserved."""
    input_tokens: int
    max_output_tokens: int
    """The worst-case output, over all the call's choices."""
    worst_case_usd: Decimal | None
    """The worst-case cost a reservation would hold (``None``: an unpriced model under token
    budgets only)."""
    unchecked: bool = False
    """True when the store was unreachable and the ledger fails open: nothing was checked (a
    reserve now would be let through unchecked too)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class BudgetState:
    """Where one payer's budgets stand today."""

    step: Step
    shares: dict[str, float]
    """Used share (spent + reserved) / limit per budget name."""
    headroom: dict[str, Decimal | int]
    """What is left per budget (USD as Decimal, tokens as int)."""
    used: dict[str, Decimal | int] = field(default_factory=dict)
    """Spent + reserved per budget, exact (USD as Decimal, tokens as int)."""
    unchecked: bool = False
    """True when the store was unreachable and the ledger fails open (``on_unavailable="open"``):
    nothing could be read, so the step is ``normal`` and there are no shares, as the calls
    themselves are let through unchecked."""


_new_reservation = positional_maker(Reservation)
_new_check = positional_maker(Check)
_new_charge = positional_maker(Charge)


class _CommitPlan(NamedTuple):
    """One commit as planned before the store sees it (see :meth:`Ledger._commit_plan`)."""

    request_id: str
    day: str
    now_ms: int
    feature: str | None
    user: str | None
    usage: Usage
    nanos: int | None
    """The cost in nano-USD (``None``: unpriced)."""
    cost: int
    """``nanos``, 0 when unpriced."""
    scopes: _Scopes
    tokens: int
    """Input plus output tokens, charged to token budgets."""
    rollup_key: str
    rollup: dict[str, int]
    cost_key: str | None
    """Where the store records the call's cost (``None``: unpriced, no sample)."""
    routing_saved_usd: Decimal | None
    per_call_key: str | None = None
    """Set (to the cost key) instead of ``cost_key`` for usage of several calls (``requests`` not
    1): the ledger records each call's share of the cost as a sample of its own after the commit."""
    conversation_mark: str | None = None
    """The once-mark that decides whether the call's conversation is counted: sent with the
    commit to a store that sets it in the commit's own atomic step, or, to any other store, when
    it could not be asked before the commit (it was down): a spooled commit carries it, and the
    replay sets it."""
    unavailable: BudgetUnavailableError | None = None
    """The store's failure of the conversation's mark, just now: the commit is spooled at once,
    not sent to wait out the store's timeout a second time."""


class _ReservePlan(NamedTuple):
    """One reservation as planned before the store sees it (see :meth:`Ledger._reserve_plan`)."""

    request_id: str
    day: str
    now_ms: int
    model: str
    feature: str | None
    user: str | None
    conversation: str | None
    overhead: str | None
    input_tokens: int
    max_output_tokens: int
    nanos: int | None
    """The worst case in nano-USD (``None``: unpriced)."""
    checks: tuple[Check, ...]
    amounts: tuple[int, ...]
    """The checks' amounts, in check order."""
    scopes: _Scopes
    """The payer's budgets the checks are of."""
    own_id: bool = False
    """The ledger drew ``request_id`` (the caller named none): no caller can retry under it."""
    minute: int | None = None
    """The epoch minute (ledger clock) the worst case was priced at (see
    :attr:`Reservation.priced_minute`)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class _Scopes:
    """The budgets one payer's calls touch (see :meth:`Ledger._scopes_of`)."""

    budgets: tuple[tuple[str, Metric, int | None], ...]
    """``(scope, metric, limit)`` per budget, in check order."""
    keys: tuple[tuple[str, Metric], ...]
    """``(scope, metric)`` per budget, in check order."""
    limits: tuple[int | None, ...]
    """The limit per budget, in check order."""
    tokens_at: tuple[bool, ...]
    """Per budget, whether it counts tokens (else nano-USD)."""
    money_limited: bool
    """A dollar budget applies (an unpriced model cannot be reserved)."""
    limited: bool
    """Some budget has a limit (the ladder and alerts have work to do)."""
    rollup_prefix: str
    """``<feature>/<user>/`` of the attribution row's key (encoded ids)."""

    def amounts(self, tokens: int, nanos: int) -> tuple[int, ...]:
        """Per budget, in check order, ``tokens`` or ``nanos`` as it counts one or the other."""
        return tuple([tokens if t else nanos for t in self.tokens_at])

    def checks(self, amounts: tuple[int, ...]) -> tuple[Check, ...]:
        """The checks of ``amounts`` (one per budget) against these budgets."""
        return _checks_of(self.budgets, amounts)


def _checks_of(
    budgets: tuple[tuple[str, Metric, int | None], ...], amounts: tuple[int, ...]
) -> tuple[Check, ...]:
    """A :class:`~.stores.base.Check` per ``(scope, metric, limit)`` budget and its amount."""
    return tuple(
        [
            _new_check(scope, metric, a, limit)
            for (scope, metric, limit), a in zip(budgets, amounts, strict=True)
        ]
    )


class _Lane:
    """What the memory store's fast lane keeps per ``(model, feature, user)`` (see
    :meth:`Ledger._lane`): everything a reserve or commit of that payer and model reads that
    does not change from call to call, and the day's balance cells.

    Valid while the ledger's policy caches are ``caches``, its registry and prices are the ones
    read and at the versions read, and the minute is ``minute`` (genai-prices are dated)."""

    __slots__ = (
        "caches",
        "cost_key",
        "default_output",
        "held",
        "max_input",
        "max_output",
        "minute",
        "price",
        "prices",
        "registry",
        "registry_version",
        "rollup_key",
        "scopes",
        "table",
        "table_version",
    )  # fmt: skip

    def __init__(
        self,
        caches: object,
        registry: Any,
        registry_version: int,
        prices: Any,
        table: Any,
        minute: int,
        price: Any,
        scopes: _Scopes,
        max_input: int | None,
        max_output: int | None,
        default_output: int | None,
        rollup_key: str,
        cost_key: str,
    ) -> None:
        self.caches, self.registry, self.registry_version = caches, registry, registry_version
        self.prices, self.table = prices, table  # the ledger's prices (None: the default table)
        self.table_version, self.minute, self.price = table.version, minute, price
        self.scopes, self.max_input, self.max_output = scopes, max_input, max_output
        self.default_output, self.rollup_key, self.cost_key = default_output, rollup_key, cost_key
        self.held: tuple[str, list[list[int]]] = ("", [])
        """``(day, cells)``: the balance cells of ``scopes.keys`` on ``day``, one value (threads
        replace it whole, never half)."""


def _drive(steps: Generator[Any, Any, T], run: Callable[[Any], Any]) -> T:
    """Run a ledger operation written as steps: each store request it yields goes through ``run``."""
    try:
        request = steps.send(None)
        while True:
            try:
                outcome = run(request)
            except (BudgetUnavailableError, StoreRefusedError) as e:  # a commit spools either
                request = steps.throw(e)
            else:
                request = steps.send(outcome)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def _model_name(field: str, value: object) -> str:
    """``value`` if it is a model name.

    Raises:
        InvalidInputError: It is not a non-empty string.
    """
    if not isinstance(value, str) or not value:
        raise InvalidInputError(field, "must be a model name (a non-empty string)", value=value)
    return value


def attribution_model(registry: ModelRegistry, model: str, prices: PriceTable | None = None) -> str:
    """The model name an attribution row is keyed on: the registry's name for the model, so
    that every spelling it prices as one model (``GPT-4o``, ``openai/gpt-4o``, ``' gpt-4o'``, a
    dated name it calls an alias) is one row of spend by model.

    That name is the registry's canonical id when the id alone resolves back to the same model
    (same canonical id and provider), else ``<provider>/<canonical>`` when that does (a model
    served by another provider, ``azure/gpt-4o``, stays apart from OpenAI's). A model the
    registry does not know, or knows only through a named fallback, keeps the caller's own name
    (nothing of it is lost); so does one whose registry entry no name resolves back to. A dated
    snapshot the registry lists as a model of its own (``gpt-4o-2024-05-13``) stays its own row,
    and so does a spelling ``prices`` holds a price override of its own for (priced apart). A
    model registered by the user (:meth:`~tokenbudget_core.registry.ModelRegistry.register`)
    keeps the name it was registered under, even when it borrows another model's prices
    (``canonical=``): it is the user's model, not an alias.
    """
    try:
        info = registry.get(model)
    except (UnknownModelError, InvalidInputError):
        return model
    if info.fallback_for is not None:
        return model
    registered = _registered_name(registry, model.strip())
    if registered is not None:
        return registered
    if prices is not None and model.strip() != info.canonical and model in prices:
        return model.strip()
    for name in (info.canonical, f"{info.provider}/{info.canonical}"):
        try:
            found = registry.get(name)
        except (UnknownModelError, InvalidInputError):
            continue
        if (
            found.fallback_for is None
            and found.canonical == info.canonical
            and found.provider == info.provider
        ):
            return name
    return model


def _registered_name(registry: ModelRegistry, name: str) -> str | None:
    """The name a user override of ``registry`` answers ``name`` (or ``<provider>/name``) under."""
    overrides = registry._overrides  # the registry's own table: read, never changed
    if name in overrides:
        return name
    bare = name.partition("/")[2]
    return bare if bare and bare in overrides else None


_COMMIT_OPTIONS = frozenset({"model", "premium_model", "unknown_model"})


def _commit_item(item: object) -> tuple[Reservation, Usage, Mapping[str, Any]]:
    """An item of :meth:`Ledger.commit_many`: ``(reservation, usage[, options])``.

    Raises:
        InvalidInputError: A malformed item, named.
    """
    if not isinstance(item, tuple) or len(item) not in (2, 3):
        raise InvalidInputError("items", "each must be (reservation, usage) or (reservation, usage, options)")
    reservation, usage, *rest = item
    if not isinstance(reservation, Reservation):
        raise InvalidInputError("reservation", "must be a Reservation from reserve()")
    options = rest[0] if rest else {}
    if not isinstance(options, Mapping) or not set(options) <= _COMMIT_OPTIONS:
        raise InvalidInputError(
            "items",
            "an item's options must be a mapping",
            value=options,
            fix="keys: model, premium_model, unknown_model",
        )
    return reservation, usage, options


def _failing(error: Exception) -> Generator[Any, Any, Any]:
    """Steps that fail at once with ``error``."""
    raise error
    yield  # a generator


class _RequestIds:
    """Fresh request ids: a random 80-bit prefix per process and a counter (unique across processes
    and hosts like a uuid4, without a system call and an object per id). A forked child draws a
    prefix of its own."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._prefix = os.urandom(10).hex()
        self._count = itertools.count()

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._count):x}"


new_request_id = _RequestIds()
"""A request id no other call of any process has (for reserve and record calls that name none)."""


def default_spool_path(store: LedgerStore) -> Path:
    """``~/.cache/tokenbudget/spool-<store>.jsonl``: one spool per store, so usage spooled for one
    store is never replayed into another.

    A store is named by its ``identity`` when it has one (a string naming where its data lives:
    a Redis store's URL and namespace, so two ledgers sharing one Redis under different
    namespaces keep apart), else a SQLite file by its absolute path, else by its URL. The name
    is only hashed, never written out: passwords in it stay out of the file name.
    """
    return Path.home() / ".cache" / "tokenbudget" / f"spool-{store_digest(store)}.jsonl"


def store_digest(store: LedgerStore) -> str:
    """A short hash naming where ``store`` keeps its data (see :func:`default_spool_path`): the
    spool's file name, and the owner of the lines a ledger spools, so a spool shared by several
    ledgers (``$TOKENBUDGET_SPOOL``) replays each line into its own store only."""
    identity = getattr(store, "identity", None)
    if not isinstance(identity, str) or not identity:
        path, url = getattr(store, "path", None), str(getattr(store, "url", ""))
        if path == ":memory:":  # an in-memory SQLite database: this connection's alone
            url = "memory://"
        elif isinstance(path, str | Path):
            url = str(Path(path).resolve())
        identity = url
    if not identity or identity.startswith("memory://"):
        identity = f"memory-{os.getpid()}-{id(store)}"  # a memory store is never unreachable anyway
    return hashlib.sha256(identity.encode(errors="surrogatepass")).hexdigest()[:16]
