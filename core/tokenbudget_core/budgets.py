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
    soft_refusal = 0.97

Money is ``Decimal`` (strings in TOML, never floats). A call that does not fit a budget is
a hard refusal; below that, the ladder tells the app to step down before it gets there.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from .errors import BudgetExceededError, InvalidInputError, UnpricedModelError

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


def _usd(where: str, value: object) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool | float):
        raise InvalidInputError(
            where, "money must be a Decimal, int or decimal string, not a float", value=value
        )
    try:
        d = Decimal(value)  # type: ignore[arg-type]
    except (InvalidOperation, TypeError, ValueError) as e:
        raise InvalidInputError(where, f"{value!r} is not an amount of USD", value=value) from e
    if not d.is_finite() or d < 0:
        raise InvalidInputError(where, "must be a non-negative amount", value=value)
    return d


def _tokens(where: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(where, "must be a non-negative integer", value=value)
    return value


@dataclass(frozen=True, kw_only=True, slots=True)
class Ladder:
    """Share of the tightest budget used at which each step starts (``None`` skips a step)."""

    cheaper_tier: float | None = 0.6
    """Route to a cheaper model tier."""
    smaller_context: float | None = 0.75
    """Send less context (smaller memory window, fewer documents)."""
    cache_only: float | None = 0.9
    """Answer only from caches."""
    soft_refusal: float | None = 0.97
    """Refuse with a message the app can show the user."""

    def __post_init__(self) -> None:
        last = 0.0
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= 1:
                raise InvalidInputError(
                    f"ladder.{f.name}", "must be a share of the budget in (0, 1]", value=v
                )
            if v < last:
                raise InvalidInputError(f"ladder.{f.name}", "steps must not decrease", value=v)
            last = v

    def step(self, used_share: float) -> Step:
        """The step for a budget of which ``used_share`` is used (1.0 or more: hard refusal)."""
        if used_share >= 1:
            return "hard_refusal"
        current: Step = "normal"
        for name in ("cheaper_tier", "smaller_context", "cache_only", "soft_refusal"):
            threshold = getattr(self, name)
            if threshold is not None and used_share >= threshold:
                current = name
        return current


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

        Raises:
            BudgetExceededError: ``max_run_tokens`` or ``max_run_usd`` would be exceeded.
            UnpricedModelError: A dollar cap applies and the model has no price.
        """
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
    """USD per user per day, across features."""
    user_daily_tokens: int | None = None
    """Tokens per user per day, across features."""
    features: Mapping[str, FeatureBudget] = field(default_factory=dict)
    """Per-feature limits; a feature without an entry uses ``default_feature``."""
    default_feature: FeatureBudget = field(default_factory=FeatureBudget)
    ladder: Ladder = field(default_factory=Ladder)
    alert_thresholds: tuple[float, ...] = (0.8, 1.0)
    """Shares of each budget at which an alert fires (once per budget and day)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "daily_usd", _usd("daily_usd", self.daily_usd))
        object.__setattr__(self, "user_daily_usd", _usd("user_daily_usd", self.user_daily_usd))
        _tokens("user_daily_tokens", self.user_daily_tokens)
        for name, fb in self.features.items():
            if not isinstance(name, str) or not name:
                raise InvalidInputError("features", "feature names must be non-empty strings", value=name)
            if not isinstance(fb, FeatureBudget):
                raise InvalidInputError(f"features[{name!r}]", "must be a FeatureBudget", value=fb)
        for t in self.alert_thresholds:
            if isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t <= 1:
                raise InvalidInputError("alert_thresholds", "each must be a share in (0, 1]", value=t)

    def feature(self, name: str | None) -> FeatureBudget:
        """The limits of ``name`` (the default ones when it has none)."""
        return self.features.get(name or "", self.default_feature)


def load_policy(source: str | os.PathLike[str] | Mapping[str, Any]) -> BudgetPolicy:
    """Build a policy from a TOML file path or an already-parsed mapping.

    Raises:
        InvalidInputError: The file cannot be read or parsed, or a field is wrong (named).
    """
    if isinstance(source, Mapping):
        data: Mapping[str, Any] = source
    else:
        path = Path(source)
        try:
            data = tomllib.loads(path.read_text())
        except OSError as e:
            raise InvalidInputError("policy_file", f"cannot read {str(path)!r}: {e.strerror}") from e
        except tomllib.TOMLDecodeError as e:
            raise InvalidInputError("policy_file", f"{str(path)!r} is not valid TOML: {e}") from e
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

    def feature(where: str, raw: object) -> FeatureBudget:
        if not isinstance(raw, Mapping):
            raise InvalidInputError(where, "must be a table", value=raw)
        names = {f.name for f in fields(FeatureBudget)}
        for key in raw:
            if key not in names:
                raise InvalidInputError(
                    f"{where}.{key}", "is not a feature limit", fix=f"known: {sorted(names)}"
                )
        try:
            return FeatureBudget(**raw)
        except InvalidInputError as e:
            raise InvalidInputError(f"{where}.{e.field}", e.problem, value=e.value, fix=e.fix) from e

    features = {name: feature(f"features.{name}", raw) for name, raw in (data.get("features") or {}).items()}
    ladder_raw = data.get("ladder") or {}
    try:
        ladder = Ladder(**ladder_raw)
    except TypeError as e:
        raise InvalidInputError(
            "ladder", str(e), fix="known steps: cheaper_tier, smaller_context, cache_only, soft_refusal"
        ) from e
    alerts = data.get("alerts") or {}
    return BudgetPolicy(
        daily_usd=data.get("daily_usd"),
        user_daily_usd=data.get("user_daily_usd"),
        user_daily_tokens=data.get("user_daily_tokens"),
        features=features,
        default_feature=feature("default_feature", data.get("default_feature") or {}),
        ladder=ladder,
        alert_thresholds=tuple(alerts.get("thresholds", (0.8, 1.0))),
    )
