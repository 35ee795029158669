"""Budget policies: per-call, per-user, per-feature and overall limits, and the degradation ladder.

A :class:`BudgetPolicy` is built in code or loaded from TOML::

    daily_usd = "200"                 # everything, per day
    user_daily_usd = "2"              # per user, across features

    [features.support]
    max_input_tokens_per_call = 16000
    max_output_tokens_per_call = 1000
    user_daily_tokens = 200000
    user_daily_usd = "0.50"
    feature_daily_usd = "50"

    [ladder]                          # share of the tightest budget used -> step
    cheaper_tier = 0.6
    smaller_context = 0.75
    cache_only = 0.9
    soft_refusal = 0.97               # false skips a step (None in code)

    context_share = 0.5               # not a step: what a memory keeps from smaller_context up

Money is ``Decimal`` (strings in TOML, never floats). A call that does not fit a budget is
a hard refusal; below that, the ladder steps down before it gets there: a ``TierRouter`` with
``ledger=`` sends calls a tier lower from ``cheaper_tier``, memories and windows given the
ledger send less context from ``smaller_context``, and the ledger refuses a call from
``cache_only`` (a cache may still answer it) and from ``soft_refusal`` (see :class:`Ladder`).
A step written ``false`` in TOML (``None`` in code) is skipped: ``cache_only = false`` and
``soft_refusal = false`` refuse only the calls that do not fit (``soft_refusal = 1.0`` still
refuses, softly, a call that fills a budget exactly).
"""

from __future__ import annotations

import functools
import math
import numbers
import os
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeAlias, TypeVar

from .errors import BudgetExceededError, InvalidInputError, UnpricedModelError, refuse_unknown
from .money import usd_to_nanos

if TYPE_CHECKING:
    from .ledger import Reservation

__all__ = ["BudgetPolicy", "FeatureBudget", "Ladder", "RunBudget", "Step", "load_policy"]

Step: TypeAlias = Literal[
    "normal", "cheaper_tier", "smaller_context", "cache_only", "soft_refusal", "hard_refusal"
]
STEPS: tuple[Step, ...] = (
    "normal",
    "cheaper_tier",
    "smaller_context",
    "cache_only",
    "soft_refusal",
    "hard_refusal",
)


def _amount(
    where: str,
    value: object,
    *,
    fix: str,
    most: Decimal,
    too_much: str,
    over_fix: str | None = None,
) -> Decimal:
    """``value`` as a non-negative ``Decimal`` of USD up to ``most`` (else ``too_much``): a
    ``Decimal``, int or decimal string (a float cannot hold most cents exactly)."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        # Not Decimal(value) on anything else: it reads a sequence as (sign, digits, exponent),
        # so the TOML array [0, [5], 3] would be $5000.
        raise InvalidInputError(
            where, f"money must be a Decimal, int or decimal string, not {_kind(value)}", value=value, fix=fix
        )
    try:
        d = Decimal(value)
    except (InvalidOperation, ValueError) as e:
        raise InvalidInputError(where, f"{value!r} is not an amount of USD", value=value, fix=fix) from e
    if not d.is_finite() or d < 0:
        raise InvalidInputError(where, "must be a non-negative, finite amount of USD", value=value, fix=fix)
    if d > most:  # (compared in USD: in nano-USD, a huge amount overflows Decimal's context)
        raise InvalidInputError(where, too_much, value=value, fix=over_fix)
    return d


def _usd(where: str, value: object) -> Decimal | None:
    """A money limit: ``None`` (no limit) or an amount (:func:`_amount`) of at least a nano-USD."""
    if value is None:
        return None
    d = _amount(
        where,
        value,
        fix='write the amount as a decimal string, e.g. "5.00" (quoted, in TOML)',
        most=_MAX_LIMIT_USD,
        too_much="is more than a ledger stores (2**53 - 1 nano-USD, about $9 million)",
        over_fix="leave the budget unset for no limit",
    )
    if d > 0 and usd_to_nanos(d) == 0:  # kept as 0 nano-USD, as the ledger rounds: refusing every call
        raise InvalidInputError(
            where,
            "is at most half a nano-USD, the ledger's unit: it would be a limit of 0",
            value=value,
            fix="write 0 to refuse every call, or an amount of at least 0.000000001",
        )
    return d


def _spent(where: str, value: object) -> Decimal:
    """An amount already spent (:func:`_amount`)."""
    return _amount(
        where,
        value,
        fix="pass a Decimal, e.g. Decimal('0.25'), or Decimal(0) at the start of a run",
        most=_MOST_SPENT_USD,
        too_much="is not an amount a run could have spent (over 10**15 USD)",
    )


def _tokens(where: str, value: object) -> int | None:
    """A token limit: ``None`` (no limit) or a non-negative int up to :data:`_MAX_LIMIT`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(
            where,
            "must be a non-negative integer"
            + ("" if isinstance(value, int | float) else f", not {_kind(value)}"),
            value=value,
            fix='write it as a number, unquoted: e.g. 100000, not "100000"'
            if isinstance(value, str)
            else "a whole number of tokens such as 100000, or None for no limit",
        )
    if value > _MAX_LIMIT:
        raise InvalidInputError(
            where,
            "is more than a ledger stores (2**53 - 1 tokens)",
            value=value,
            fix="leave the budget unset for no limit",
        )
    return value


_MAX_LIMIT = 2**53 - 1
"""The largest limit every store holds exactly (Redis compares in doubles): tokens or nano-USD."""
_MAX_LIMIT_USD = Decimal(_MAX_LIMIT) / 1_000_000_000
"""The same in USD (about $9 million)."""
_MOST_SPENT_USD = Decimal("1e15")
"""An amount spent beyond this is a mistake (and far beyond it, Decimal arithmetic overflows)."""


_C = TypeVar("_C", bound=type)


def _named_settings(cls: _C) -> _C:
    """``cls`` (a keyword-only dataclass) whose constructor refuses a positional argument or an
    unknown setting with an :class:`InvalidInputError` naming it and the known ones (a typo such
    as ``dayly_usd=`` is not a bare ``TypeError``)."""
    init: Callable[..., None] = cls.__dict__["__init__"]  # the one dataclass generated
    names = [f.name for f in fields(cls) if f.init]

    @functools.wraps(init)
    def __init__(self: object, *args: object, **kwargs: object) -> None:
        if args:
            raise InvalidInputError(
                cls.__name__,
                f"takes its settings by name, got {len(args)} positional argument(s)",
                value=args[0],
                fix=f"e.g. {cls.__name__}({names[0]}=...); settings: {', '.join(names)}",
            )
        refuse_unknown(cls.__name__, kwargs, names, kind="setting")
        init(self, **kwargs)

    cls.__init__ = __init__  # type: ignore[misc]  # wrapping the generated one
    return cls


_DEFAULT_CONTEXT_SHARE = 0.5


@_named_settings
@dataclass(frozen=True, kw_only=True, slots=True)
class Ladder:
    """Share of the tightest budget used at which each step starts (``None`` skips a step: written
    ``false`` in a TOML policy), and what a memory keeps from ``smaller_context`` up.

    Who acts on each step:

    * ``cheaper_tier``: a :class:`~tokenbudget_core.routing.TierRouter` with ``ledger=`` (and the
      routers built on it) routes one tier down;
    * ``smaller_context``: a memory given the ledger (``ledger=`` on LangChain's
      ``TokenBudgetChatMessageHistory``, ``SummaryChatMessageHistory`` and
      ``ContextWindowMiddleware``, and LlamaIndex's ``TokenBudgetChatMemory`` and
      ``SummaryChatMemory``; a summarising one keeps its summary and reads fewer recent turns)
      keeps ``context_share`` of its token budget; anything else reads
      :meth:`Ledger.context_tokens <tokenbudget_core.ledger.Ledger.context_tokens>` (a
      ``ConversationWindow`` or ``SummaryBuffer`` with ``messages(within=...)``);
    * ``cache_only`` and ``soft_refusal``: the ledger refuses the call (``reserve`` and ``check``
      raise a ``BudgetExceededError`` whose ``step`` names the step), so nothing is sent; a
      response cache the call is looked up in first still answers it, at $0;
    * ``hard_refusal`` (a call that does not fit): refused, also by a router with ``ledger=``.

    The step is read from :attr:`Reservation.step <tokenbudget_core.ledger_records.Reservation.step>`
    (what :meth:`Ledger.reserve <tokenbudget_core.ledger.Ledger.reserve>` granted),
    :meth:`Ledger.check <tokenbudget_core.ledger.Ledger.check>` (before building a request) or
    :meth:`Ledger.state <tokenbudget_core.ledger.Ledger.state>` (a payer's budgets now), and
    reported by ``tokenbudget budgets``, ``GET /budgets`` and the dashboard."""

    cheaper_tier: float | None = 0.6
    """Route to a cheaper model tier: a ``TierRouter`` with ``ledger=`` (and the routers built on
    it) sends the call one tier below the one its classifier picked."""
    smaller_context: float | None = 0.75
    """Send less context: a memory given the ledger keeps ``context_share`` of its token budget
    (its oldest turns left out for the read; system and pinned messages, whole tool-call units
    and the newest turn kept; when those alone need more, the whole budget); an app building its
    own prompt reads :meth:`Ledger.context_tokens <tokenbudget_core.ledger.Ledger.context_tokens>`.
    Memories without ``ledger=``, and the summarising ones, keep the budget they were given."""
    cache_only: float | None = 0.9
    """Answer from caches only: the ledger refuses a call that would take the budget to this
    share, with a ``BudgetExceededError`` whose ``step`` is ``cache_only``, and holds nothing for
    it. A cache looked up before the call is sent still answers at $0: LangChain's
    ``BudgetCallbackHandler`` leaves the refusal to the ``TokenBudgetLLMCache`` its model looks
    up first (a hit is served, a miss raises the refusal: ``invoke`` / ``batch`` and their async
    twins; LangChain's ``stream()`` looks no cache up, so a streamed call is refused), and a
    LlamaIndex ``CachedLLM`` answers before its wrapped LLM's handler reserves. A
    ``BudgetMiddleware`` serves a refused call from the agent model's ``TokenBudgetLLMCache``
    too. With no cache in front of the model the step refuses like ``soft_refusal``, from a
    lower share: skip it (``None``) to send calls up to ``soft_refusal``. A ``TierRouter`` keeps
    the ``cheaper_tier`` step's tier here, and a refused call is looked up in the caches of that
    tier and of the tiers it stepped over."""
    soft_refusal: float | None = 0.97
    """Refuse with a message the app can show the user: the ledger (``reserve``, and ``check``)
    refuses a call that would take the budget to this share with a ``BudgetExceededError`` whose
    ``step`` is ``soft_refusal``, so spend mostly stays below it (a threshold alert above it,
    such as the default 100% one, does not fire; the refusals are told by a refusing alert
    instead: see :attr:`BudgetPolicy.alert_thresholds`). The budget adapters raise it (or end the
    run: ``BudgetMiddleware(on_exceeded="end")``); LangChain's ``BudgetCallbackHandler`` and
    ``BudgetMiddleware`` serve a refused call from the ``TokenBudgetLLMCache`` its model looks up
    first, at $0. A
    ``TierRouter`` refuses at this step only with ``refuse_at_soft_refusal=True``."""

    context_share: float = _DEFAULT_CONTEXT_SHARE
    """Not a step: the share of its token budget a memory or window given the ledger
    (``ledger=``) keeps from ``smaller_context`` up (:meth:`context_tokens`). A share other than
    the default with ``smaller_context`` skipped is refused: it could never apply."""

    def __post_init__(self) -> None:
        share = self.context_share
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
            raise InvalidInputError(
                "ladder.context_share",
                "must be the share of a memory's token budget kept from smaller_context up, in (0, 1]",
                value=share,
                fix="a number such as 0.5 to keep half the budget (1 keeps it whole)",
            )
        if self.smaller_context is None and share != _DEFAULT_CONTEXT_SHARE:
            raise InvalidInputError(
                "ladder.context_share",
                "applies from smaller_context up, which this ladder skips: it would never apply",
                value=share,
                fix="set smaller_context (a share such as 0.75), or leave context_share out",
            )
        last = 0.0
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None or f.name == "context_share":
                continue
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= 1:
                raise InvalidInputError(
                    f"ladder.{f.name}",
                    "must be a share of the budget in (0, 1]",
                    value=v,
                    fix="a number such as 0.6 for 60%, or None to skip the step (false in a TOML policy)",
                )
            if v < last:
                raise InvalidInputError(
                    f"ladder.{f.name}",
                    f"steps must not decrease: it starts below an earlier step ({last})",
                    value=v,
                    fix=f"write at least {last} (the steps go cheaper_tier, smaller_context, cache_only, "
                    "soft_refusal), or None to skip the step (false in a TOML policy)",
                )
            last = v

    def context_tokens(self, max_tokens: int, step: Step) -> int:
        """The token budget a memory of ``max_tokens`` keeps for a payer at ``step``: the whole
        of it below ``smaller_context`` (and when that step is skipped), ``context_share`` of it
        (at least 1) from there up.

        Raises:
            InvalidInputError: ``max_tokens`` is not an integer >= 1, or ``step`` is no step.
        """
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise InvalidInputError("max_tokens", "must be an integer >= 1", value=max_tokens)
        if step not in STEPS:
            raise InvalidInputError(
                "step", "is not a ladder step", value=step, fix=f"one of {', '.join(STEPS)}"
            )
        if self.smaller_context is None or STEPS.index(step) < STEPS.index("smaller_context"):
            return max_tokens
        return max(1, int(max_tokens * self.context_share))

    def step(self, used_share: float) -> Step:
        """The step for a budget of which ``used_share`` is used (1.0 or more: hard refusal).

        Raises:
            InvalidInputError: ``used_share`` is not a real number >= 0 (a bool, NaN, a string...).
        """
        if (
            isinstance(used_share, bool)
            or not isinstance(used_share, numbers.Real)
            or math.isnan(used_share)
            or used_share < 0
        ):
            raise InvalidInputError(
                "used_share",
                "must be a real number >= 0: the share of the budget used",
                value=used_share,
                fix="pass used / limit as a float, e.g. 0.5 for half the budget",
            )
        if used_share >= 1:
            return "hard_refusal"
        current: Step = "normal"
        for name in ("cheaper_tier", "smaller_context", "cache_only", "soft_refusal"):
            threshold = getattr(self, name)
            if threshold is not None and used_share >= threshold:
                current = name
        return current


@_named_settings
@dataclass(frozen=True, kw_only=True, slots=True)
class FeatureBudget:
    """Limits of one feature (``None``: no limit)."""

    max_input_tokens_per_call: int | None = None
    max_output_tokens_per_call: int | None = None
    user_daily_tokens: int | None = None
    """Input plus output tokens per user per day in this feature."""
    user_daily_usd: Decimal | None = None
    """USD per user per day in this feature."""
    feature_daily_usd: Decimal | None = None
    """USD per day for the whole feature."""

    def __post_init__(self) -> None:
        for name in ("max_input_tokens_per_call", "max_output_tokens_per_call", "user_daily_tokens"):
            _tokens(name, getattr(self, name))
        for name in ("user_daily_usd", "feature_daily_usd"):
            object.__setattr__(self, name, _usd(name, getattr(self, name)))


@_named_settings
@dataclass(frozen=True, kw_only=True, slots=True)
class RunBudget:
    """Caps on one group of calls (an agent run): tokens and USD, checked against the next call's worst case.

    The caller keeps what the group has used so far (the agent state, for instance) and asks
    :meth:`check` before each call.

    Example:
        >>> cap = RunBudget(max_tokens=1_000)
        >>> cap.max_tokens
        1000
    """

    max_tokens: int | None = None
    """Input plus output tokens of the whole group."""
    max_usd: Decimal | None = None
    """USD of the whole group."""

    def __post_init__(self) -> None:
        _tokens("max_tokens", self.max_tokens)
        object.__setattr__(self, "max_usd", _usd("max_usd", self.max_usd))

    def check(self, reservation: Reservation, *, tokens_used: int, usd_used: Decimal) -> None:
        """Raise when the reserved worst case of the next call would break a cap.

        Args:
            reservation: The next call's reservation, from ``ledger.reserve()``.
            tokens_used: Input plus output tokens the group has used so far (``0`` at its start).
            usd_used: USD the group has spent so far: a ``Decimal`` (or an int or decimal string).

        Raises:
            BudgetExceededError: ``max_run_tokens`` or ``max_run_usd`` would be exceeded.
            UnpricedModelError: A dollar cap applies and the model has no price.
            InvalidInputError: ``reservation`` is not a reservation, ``tokens_used`` is not a
                non-negative int or ``usd_used`` not a non-negative amount (a float included).
        """
        from .ledger_records import Reservation  # here: ledger_records imports this module

        if not isinstance(reservation, Reservation):
            raise InvalidInputError(
                "reservation",
                f"must be a Reservation, not {type(reservation).__name__}",
                value=reservation,
                fix="pass what ledger.reserve() returned for the next call",
            )
        if isinstance(tokens_used, bool) or not isinstance(tokens_used, int) or tokens_used < 0:
            raise InvalidInputError(
                "tokens_used",
                "must be a non-negative integer: the tokens the run has used so far",
                value=tokens_used,
                fix="pass 0 at the start of a run",
            )
        usd_used = _spent("usd_used", usd_used)
        r = reservation
        scope = f"this run (feature={r.feature or '-'} user={r.user or '-'})"
        worst = r.input_tokens + r.max_output_tokens
        if self.max_tokens is not None and tokens_used + worst > self.max_tokens:
            raise BudgetExceededError(
                budget="max_run_tokens", scope=scope, limit=self.max_tokens, used=tokens_used, requested=worst
            )
        if self.max_usd is None:
            return
        if r.reserved_usd is None:
            raise UnpricedModelError(r.model)
        if usd_used + r.reserved_usd > self.max_usd:
            raise BudgetExceededError(
                budget="max_run_usd", scope=scope, limit=self.max_usd, used=usd_used, requested=r.reserved_usd
            )


class _Features(dict[str, "FeatureBudget"]):
    """A policy's per-feature limits: a dict that cannot be changed (a ledger works out what it
    needs from a policy once; a changed policy is a new one, assigned to ``ledger.policy``)."""

    def _read_only(self, *args: object, **kwargs: object) -> NoReturn:
        raise InvalidInputError(
            "features",
            "a BudgetPolicy's features cannot be changed",
            fix="build a new policy (dataclasses.replace(policy, features={...})) and assign it "
            "to ledger.policy",
        )

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _read_only

    def __reduce__(self) -> tuple[type[_Features], tuple[dict[str, FeatureBudget]]]:
        return (_Features, (dict(self),))


@_named_settings
@dataclass(frozen=True, kw_only=True, slots=True)
class BudgetPolicy:
    """All the limits the ledger enforces.

    Example:
        >>> policy = BudgetPolicy(daily_usd="100", features={"support": FeatureBudget(user_daily_usd="0.5")})
        >>> policy.feature("support").user_daily_usd
        Decimal('0.5')
    """

    daily_usd: Decimal | None = None
    """Overall USD per day."""
    user_daily_usd: Decimal | None = None
    """USD per user per day, across features. Calls that name no user count as one anonymous user
    in every per-user budget (see :mod:`tokenbudget_core.ledger`)."""
    user_daily_tokens: int | None = None
    """Tokens per user per day, across features."""
    features: Mapping[str, FeatureBudget] = field(default_factory=dict)
    """Per-feature limits; a feature without an entry uses ``default_feature``."""
    default_feature: FeatureBudget = field(default_factory=FeatureBudget)
    ladder: Ladder = field(default_factory=Ladder)
    alert_thresholds: tuple[float, ...] = (0.8, 1.0)
    """Shares of each budget at which an alert fires (once per budget, limit and day: a limit
    raised mid-day gets alerts of its own); kept as floats, sorted, each once (``1`` and ``1.0``
    are one threshold: its alert fires once a day).

    An alert fires on what was *spent*, after a commit; a refused call spends nothing. With the
    default ladder, calls are refused from 90% (:attr:`Ladder.cache_only`: a cache may still
    answer them; then :attr:`Ladder.soft_refusal`, 97%), so the spend of
    calls that reserve first stops short of 100% and the default 100% alert does not fire. So a
    budget that refuses a call a fresh budget would take (a cache-only, soft or hard refusal) sends an
    alert of its own, once per budget, limit and day, to the same sinks
    (:attr:`Alert.refusing <tokenbudget_core.alerts.Alert.refusing>`, at the share it stood at);
    a threshold below the first refusing share (e.g. ``(0.5, 0.8, 1.0)``) warns that refusals are
    near (a big call is refused sooner)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "daily_usd", _usd("daily_usd", self.daily_usd))
        object.__setattr__(self, "user_daily_usd", _usd("user_daily_usd", self.user_daily_usd))
        _tokens("user_daily_tokens", self.user_daily_tokens)
        if not isinstance(self.features, Mapping):
            raise InvalidInputError(
                "features",
                "must be a mapping of feature name to FeatureBudget",
                value=self.features,
                fix='e.g. features={"support": FeatureBudget(user_daily_usd="0.5")}',
            )
        for name, fb in self.features.items():
            if not isinstance(name, str) or not name:
                raise InvalidInputError(
                    "features",
                    "feature names must be non-empty strings",
                    value=name,
                    fix='name each feature as the calls do, e.g. features={"support": FeatureBudget(...)}; '
                    "default_feature holds the limits of calls that name none",
                )
            if not isinstance(fb, FeatureBudget):
                raise InvalidInputError(
                    f"features[{name!r}]",
                    f"must be a FeatureBudget, not a {type(fb).__name__}",
                    value=fb,
                    fix=_FEATURE_FIX,
                )
        object.__setattr__(
            self, "features", _Features(self.features)
        )  # a policy is a value: replace it whole
        if not isinstance(self.default_feature, FeatureBudget):
            raise InvalidInputError(
                "default_feature",
                f"must be a FeatureBudget, not a {type(self.default_feature).__name__}",
                value=self.default_feature,
                fix=_FEATURE_FIX,
            )
        if not isinstance(self.ladder, Ladder):
            raise InvalidInputError(
                "ladder",
                f"must be a Ladder, not a {type(self.ladder).__name__}",
                value=self.ladder,
                fix="e.g. ladder=Ladder(cheaper_tier=0.5); a dict of steps: Ladder(**steps)",
            )
        thresholds = self.alert_thresholds
        if isinstance(thresholds, str | bytes) or not isinstance(thresholds, Sequence):
            raise InvalidInputError(
                "alert_thresholds",
                "must be a tuple of shares in (0, 1]",
                value=thresholds,
                fix="e.g. alert_thresholds=(0.8, 1.0), or (0.8,) for one alert",
            )
        for t in thresholds:
            if isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t <= 1:
                raise InvalidInputError(
                    "alert_thresholds",
                    "each must be a share in (0, 1]",
                    value=t,
                    fix="numbers such as 0.8 for 80% and 1 for 100%",
                )
        # Floats, each once: the ledger marks an alert sent by the threshold's text ("1" is "1.0").
        object.__setattr__(self, "alert_thresholds", tuple(sorted({float(t) for t in thresholds})))

    def feature(self, name: str | None) -> FeatureBudget:
        """The limits of ``name`` (the default ones when it has none)."""
        return self.features.get(name or "", self.default_feature)

    def daily_limits(self, feature: str | None) -> dict[str, Decimal | int | None]:
        """The limit of each daily budget a call of ``feature`` touches (``None``: unlimited), by the
        budget names :meth:`Ledger.state <tokenbudget_core.ledger.Ledger.state>`, refusals and
        reports use."""
        fb = self.feature(feature)
        return {
            "user_daily_tokens": fb.user_daily_tokens,
            "user_daily_usd": fb.user_daily_usd,
            "feature_daily_usd": fb.feature_daily_usd,
            "daily_usd": self.daily_usd,
            "user_daily_tokens (all features)": self.user_daily_tokens,
            "user_daily_usd (all features)": self.user_daily_usd,
        }


_FEATURE_FIX = 'e.g. FeatureBudget(user_daily_usd="0.5"); a dict of limits: FeatureBudget(**limits)'
"""How to write a feature's limits in code (a plain dict is the natural mistake)."""

_TOML_TYPES = {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array"}


def _kind(value: object) -> str:
    """What ``value`` is, in TOML's words where it has them: ``a float``, ``an array``, ``a table``."""
    if value is None:
        return "None"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, tuple):
        return "an array"
    return _TOML_TYPES.get(type(value), f"a {type(value).__name__}")


def _table(where: str, raw: object, fix: str) -> Mapping[str, Any]:
    """``raw`` if it is a TOML table (``None``: an empty one), else the error naming ``where`` and how
    to write it."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InvalidInputError(where, f"must be a table, not {_kind(raw)}", value=raw, fix=fix)
    return raw


def _read_toml(source: str | os.PathLike[str]) -> Mapping[str, Any]:
    path = Path(source)
    try:
        # TOML is UTF-8 by definition, whatever the locale; a BOM (Notepad, PowerShell) is skipped.
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise InvalidInputError("policy_file", f"cannot read {str(path)!r}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise InvalidInputError(
            "policy_file",
            f"{str(path)!r} is not UTF-8 (invalid byte at offset {e.start}); TOML files are UTF-8",
            value=str(path),
            fix="save the file as UTF-8",
        ) from e
    except ValueError as e:  # a path no file can have: "embedded null byte"
        raise InvalidInputError(
            "policy_file", f"cannot read {str(path)!r}: {e}", value=str(path), fix="check the path"
        ) from e
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InvalidInputError("policy_file", f"{str(path)!r} is not valid TOML: {e}") from e


def load_policy(source: str | os.PathLike[str] | Mapping[str, Any]) -> BudgetPolicy:
    """Build a policy from a TOML file path (UTF-8) or an already-parsed mapping.

    A ladder step written ``false`` is skipped (``None`` in :class:`Ladder`): TOML has no null.

    Raises:
        InvalidInputError: The file cannot be read, is not UTF-8 or not TOML, or a setting is
            unknown or wrong (named, e.g. ``features.support.user_daily_usd``; a table given
            another type, e.g. ``alerts = 0.8``, names the table).
    """
    if isinstance(source, Mapping):
        data: Mapping[str, Any] = source
    elif isinstance(source, str | os.PathLike) and os.fspath(source).strip():
        data = _read_toml(source)
    else:
        raise InvalidInputError(
            "source",
            "must be a TOML file path (not empty) or a mapping",
            value=source,
            fix="e.g. load_policy('budgets.toml')",
        )
    known = {
        "daily_usd",
        "user_daily_usd",
        "user_daily_tokens",
        "features",
        "default_feature",
        "ladder",
        "alerts",
    }
    for key in data:
        if key not in known:
            raise InvalidInputError(key, "is not a policy setting", fix=f"known settings: {sorted(known)}")

    limit_names = sorted(f.name for f in fields(FeatureBudget))

    def feature(where: str, raw: object) -> FeatureBudget:
        limits = _table(
            where, raw, fix=f"write [{where}] with its limits under it ({', '.join(limit_names)})"
        )
        for key in limits:
            if key not in limit_names:
                raise InvalidInputError(
                    f"{where}.{key}", "is not a feature limit", fix=f"known: {limit_names}"
                )
        try:
            return FeatureBudget(**limits)
        except InvalidInputError as e:
            raise InvalidInputError(f"{where}.{e.field}", e.problem, value=e.value, fix=e.fix) from e

    per_feature = _table(
        "features",
        data.get("features"),
        fix="write one [features.NAME] table per feature, e.g. [features.support]",
    )
    features = {name: feature(f"features.{name}", raw) for name, raw in per_feature.items()}
    steps = [f.name for f in fields(Ladder) if f.name != "context_share"]
    ladder_raw = _table("ladder", data.get("ladder"), fix=f"write [ladder] with {' / '.join(steps)} = share")
    for key in ladder_raw:
        if key not in (*steps, "context_share"):
            raise InvalidInputError(
                f"ladder.{key}",
                "is not a ladder step",
                fix=f"known steps: {', '.join(steps)} (and context_share, the share a memory keeps)",
            )
        if key == "context_share" and ladder_raw[key] is False:
            raise InvalidInputError(
                "ladder.context_share",
                "is not a step and cannot be skipped with false",
                value=False,
                fix="a share such as 0.5, or 1 to keep memories whole; skip smaller_context instead",
            )
    # TOML has no null: false skips a step (None in code); true is refused by Ladder, named.
    settings: dict[str, Any] = {key: None if value is False else value for key, value in ladder_raw.items()}
    ladder = Ladder(**settings)
    alerts = _table("alerts", data.get("alerts"), fix="write [alerts] with thresholds = [0.8, 1.0] under it")
    for key in alerts:
        if key != "thresholds":
            raise InvalidInputError(f"alerts.{key}", "is not an alert setting", fix="known: thresholds")
    thresholds = alerts.get("thresholds")
    if thresholds is None:
        thresholds = (0.8, 1.0)
    if not isinstance(thresholds, list | tuple):
        kind = _TOML_TYPES.get(type(thresholds), f"a {type(thresholds).__name__}")
        raise InvalidInputError(
            "alerts.thresholds",
            f"must be an array of shares in (0, 1], not {kind}",
            value=thresholds,
            fix="write it in brackets, e.g. thresholds = [0.8, 1.0]",
        )
    try:
        return BudgetPolicy(
            daily_usd=data.get("daily_usd"),
            user_daily_usd=data.get("user_daily_usd"),
            user_daily_tokens=data.get("user_daily_tokens"),
            features=features,
            default_feature=feature("default_feature", data.get("default_feature")),
            ladder=ladder,
            alert_thresholds=tuple(thresholds),
        )
    except InvalidInputError as e:
        if e.field != "alert_thresholds":
            raise
        raise InvalidInputError("alerts.thresholds", e.problem, value=e.value, fix=e.fix) from e
