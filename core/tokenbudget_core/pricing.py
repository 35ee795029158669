"""What a call costs, in US dollars, as :class:`~decimal.Decimal`.

Prices come from user overrides (:class:`PriceOverride` in a :class:`PriceTable`;
the process-wide one is filled by :func:`register_price`, :func:`load_prices` and
``$TOKENBUDGET_PRICES``), else from the ``genai-prices`` data (date-dependent and
tiered long-context prices included). No price table is kept here, and an unknown
price is never $0: :func:`cost_of` raises
:class:`~tokenbudget_core.errors.UnpricedModelError`; :func:`price_of` returns
``priced=False`` and ``total=None``.

Models resolve through the model registry, so dated and ``provider/model`` names
price as their canonical model. An override makes its exact name priceable even
when the registry does not know it. As in genai-prices, each part of a usage has
its price (cache reads, 5-minute and 1-hour cache writes, reasoning), a missing
price falls back to its parent's, and a tier is chosen by the input tokens per request.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import time
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any, Literal, TypeAlias

from .errors import InvalidInputError, UnknownModelError, UnpricedModelError
from .money import jsonable
from .price_overrides import (
    PriceLike,
    PriceOverride,
    PriceTable,
    check_price_options,
    default_price_table,
    load_prices,
    register_price,
)
from .registry import ModelInfo, ModelRegistry, default_registry
from .usage import Usage

__all__ = [
    "CostBreakdown",
    "PriceLike",
    "PriceOverride",
    "PriceSource",
    "PriceTable",
    "cost_nanos",
    "cost_of",
    "cost_or_none",
    "default_price_table",
    "format_usd",
    "load_prices",
    "price_of",
    "register_price",
]

PriceSource: TypeAlias = Literal["genai-prices", "override"]

_MTOK = Decimal(1_000_000)
_COMPONENTS = ("input_cost", "cache_read_cost", "cache_write_cost", "output_cost", "request_cost")


@dataclass(frozen=True, kw_only=True, slots=True)
class CostBreakdown:
    """The cost of a usage, per component, in USD.

    Every amount is a :class:`~decimal.Decimal`. When the model has no known price,
    ``priced`` is ``False`` and every amount is ``None``, never 0.

    Example:
        >>> b = price_of(Usage(input_tokens=1000, output_tokens=100), "gpt-4o")
        >>> b.total, b.source
        (Decimal('0.0035'), 'genai-prices')
    """

    model: str
    """The model name the caller used."""
    priced_as: str | None
    """The id whose price was used (the registry's canonical id, or the override's name)."""
    provider: str | None
    """The provider id, or ``None`` for an override of a model the registry does not know."""
    usage: Usage
    """The usage that was priced."""
    input_cost: Decimal | None
    """Uncached input tokens."""
    cache_read_cost: Decimal | None
    """Input tokens read from the prompt cache."""
    cache_write_cost: Decimal | None
    """Input tokens written to the prompt cache (all TTLs)."""
    output_cost: Decimal | None
    """Output tokens, reasoning included."""
    request_cost: Decimal | None
    """Per-request fees (0 for most models)."""
    total: Decimal | None
    """The sum of the components."""
    priced: bool
    """Whether a price was found."""
    source: PriceSource | None
    """``genai-prices`` or ``override``; ``None`` when unpriced."""
    estimated: bool
    """True when the usage is an estimate (copied from :attr:`Usage.estimated`)."""

    def as_dict(self) -> dict[str, Any]:
        """The breakdown for JSON: amounts as decimal strings, unknown amounts as ``None``."""
        out = {f.name: jsonable(getattr(self, f.name)) for f in fields(self) if f.name != "usage"}
        return out | {"usage": self.usage.as_dict()}


# -- computing ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Rates:
    """Per-million-token rates already resolved for one usage (tier chosen, fallbacks applied)."""

    input: Decimal
    cache_read: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    output: Decimal | None
    reasoning: Decimal
    per_thousand_requests: Decimal


MAX_PRICED = 10**18
"""The largest token (or request) count :func:`price_of` prices: a cost of such figures keeps
every nano-dollar in :mod:`decimal`'s default 28 digits."""


def _check_priced(usage: Usage) -> None:
    """Refuse figures past :data:`MAX_PRICED`.

    Raises:
        InvalidInputError: ``usage`` holds more than :data:`MAX_PRICED` tokens or requests.
    """
    if max(usage.input_tokens, usage.output_tokens, usage.requests) > MAX_PRICED:
        raise InvalidInputError(
            "usage",
            f"holds more than {MAX_PRICED:.0e} tokens or requests, past what is priced exactly",
            value=usage,
            fix="check the figures: a real bill is far smaller",
        )


def check_at(at: object) -> None:
    """``at`` (when a call was made) is ``None`` or a time-zone-aware ``datetime``: a naive one
    would be read in the machine's local zone, a date or epoch number has no ``timestamp()``.

    Raises:
        InvalidInputError: Named ``at``.
    """
    if at is None:
        return
    if not isinstance(at, datetime):
        raise InvalidInputError("at", "must be a datetime (or None)", value=at, fix="datetime.now(UTC)")
    if at.tzinfo is None or at.utcoffset() is None:
        raise InvalidInputError("at", "must have a time zone", value=at, fix="datetime.now(UTC)")


def price_of(
    usage: Usage,
    model: str,
    *,
    registry: ModelRegistry | None = None,
    prices: PriceTable | None = None,
    at: datetime | None = None,
) -> CostBreakdown:
    """The cost of ``usage`` on ``model``, per component; never raises for a missing price.

    Args:
        usage: The tokens to price.
        model: A model name (dated names and ``provider/model`` accepted).
        registry: The model registry (default: the process-wide one).
        prices: The overrides (default: the process-wide table).
        at: When the call was made, for date-dependent prices (default: now).

    Raises:
        InvalidInputError: ``usage`` is not a :class:`Usage` or holds more than
            :data:`MAX_PRICED` tokens, ``model`` is not a name, ``registry`` / ``prices`` is
            not a registry / price table, or ``at`` is not a time-zone-aware ``datetime``.
        UnknownModelError: Neither the registry nor an override knows ``model``.
    """
    if not isinstance(usage, Usage):
        kind = type(usage).__name__
        raise InvalidInputError("usage", f"must be a Usage, got {kind}", value=usage, fix="use Usage(...)")
    if not isinstance(model, str) or not model.strip():
        raise InvalidInputError("model", "must be a non-empty model name", value=model)
    _check_priced(usage)
    check_price_options(registry, prices)
    check_at(at)
    table = prices if prices is not None else default_price_table()
    reg = registry if registry is not None else default_registry()
    override = table.get(model)
    if override is not None:
        try:
            known: ModelInfo | None = reg.get(model)
        except UnknownModelError:
            known = None  # an override makes its exact name priceable on its own
        return _breakdown(usage, model, model.strip(), known, _override_rates(override), "override")
    info = reg.get(model)
    override = table.get(info.canonical)
    if override is not None:
        return _breakdown(usage, model, info.canonical, info, _override_rates(override), "override")
    rates = _genai_rates(info, usage, at)
    if rates is None:
        return _breakdown(usage, model, None, info, None, None)
    return _breakdown(usage, model, info.canonical, info, rates, "genai-prices")


def cost_of(
    usage: Usage,
    model: str,
    *,
    registry: ModelRegistry | None = None,
    prices: PriceTable | None = None,
    at: datetime | None = None,
) -> Decimal:
    """The total cost of ``usage`` on ``model`` in USD; arguments as for :func:`price_of`.

    Raises:
        InvalidInputError: As for :func:`price_of` (``usage``, ``model``, ``registry``,
            ``prices``, or ``at`` not a time-zone-aware ``datetime``).
        UnknownModelError: Neither the registry nor an override knows ``model``.
        UnpricedModelError: The model is known but has no price (it is never priced at $0).

    Example:
        >>> cost_of(Usage(input_tokens=1000, output_tokens=100), "gpt-4o-mini")
        Decimal('0.00021')
    """
    breakdown = price_of(usage, model, registry=registry, prices=prices, at=at)
    if breakdown.total is None:
        raise UnpricedModelError(model)
    return breakdown.total


def format_usd(amount: Decimal | None) -> str:
    """Format dollars with at least six decimals and no rounding (``$0.003250``); ``None`` -> ``unpriced``.

    Raises:
        InvalidInputError: ``amount`` is neither ``None`` nor a ``Decimal`` (a float is refused:
            money is never a binary float here).
    """
    if amount is None:
        return "unpriced"
    if not isinstance(amount, Decimal):
        problem = f"must be a Decimal amount of USD (or None), got {type(amount).__name__}"
        raise InvalidInputError("amount", problem, value=amount, fix='e.g. Decimal("0.00325")')
    exponent = amount.normalize().as_tuple().exponent
    places = max(6, -exponent if isinstance(exponent, int) else 6)
    return f"${amount:.{places}f}"


def _first(price: Decimal | None, default: Decimal) -> Decimal:
    return default if price is None else price


def _override_rates(o: PriceOverride) -> _Rates:
    """Overrides are flat prices (no tiers, no request fees)."""
    write = _first(o.cache_write_mtok, o.input_mtok)
    return _Rates(
        input=o.input_mtok,
        cache_read=_first(o.cache_read_mtok, o.input_mtok),
        cache_write_5m=write,
        cache_write_1h=_first(o.cache_write_1h_mtok, write),
        output=o.output_mtok,
        reasoning=o.output_mtok,
        per_thousand_requests=Decimal(0),
    )


_PRICE_KEYS = (
    "input_mtok",
    "output_mtok",
    "cache_read_mtok",
    "cache_write_mtok",
    "cache_write_5m_mtok",
    "cache_write_1h_mtok",
    "output_reasoning_mtok",
    "requests_kcount",
)


@functools.lru_cache(maxsize=1024)
def _model_prices(canonical: str, provider: str, minute: int) -> SimpleNamespace | None:
    """genai-prices' prices of a model at a minute, read once into plain attributes (cached)."""
    from genai_prices import data_snapshot

    try:
        _, gmodel = data_snapshot.get_snapshot().find_provider_model(canonical, None, provider, None)
    except LookupError:
        return None
    mp = gmodel.get_prices(datetime.fromtimestamp(minute * 60, tz=UTC))
    return SimpleNamespace(**{key: getattr(mp, key, None) for key in _PRICE_KEYS})


def _genai_rates(info: ModelInfo, usage: Usage, at: datetime | None) -> _Rates | None:
    return _rates_by_input(info, usage.input_tokens, usage.requests, usage.output_tokens, at)


def _rates_by_input(
    info: ModelInfo, input_tokens: int, requests: int, output_tokens: int, at: datetime | None
) -> _Rates | None:
    minute = int((at.timestamp() if at is not None else time.time()) // 60)
    mp = _model_prices(info.canonical, info.provider, minute)
    if mp is None:
        return None
    # genai-prices picks a tier by the input tokens of the request; per request here.
    per_request_input: int | Decimal = input_tokens if requests <= 1 else Decimal(input_tokens) / requests
    bracket = bisect.bisect_left(_thresholds(info.canonical, info.provider, minute), per_request_input)
    rates = _bracket_rates(info.canonical, info.provider, minute, bracket)
    if rates is None or (rates.output is None and output_tokens > 0):
        return None
    return rates if rates.output is not None else _no_output_price(rates)


@functools.lru_cache(maxsize=1024)
def _no_output_price(rates: _Rates) -> _Rates:
    return dataclasses.replace(rates, output=Decimal(0))


@functools.lru_cache(maxsize=1024)
def _thresholds(canonical: str, provider: str, minute: int) -> tuple[Decimal, ...]:
    """The input-token thresholds where a model's tiered prices change (sorted)."""
    from genai_prices.types import TieredPrices

    mp = _model_prices(canonical, provider, minute)
    starts = {
        Decimal(t.start)
        for key in _PRICE_KEYS
        if isinstance(price := getattr(mp, key, None), TieredPrices)
        for t in price.tiers
    }
    return tuple(sorted(starts))


@functools.lru_cache(maxsize=4096)
def _bracket_rates(canonical: str, provider: str, minute: int, bracket: int) -> _Rates | None:
    """Resolved rates for requests whose input lies above ``bracket`` thresholds (cached)."""
    from genai_prices.types import TieredPrices

    mp = _model_prices(canonical, provider, minute)
    thresholds = _thresholds(canonical, provider, minute)
    # Any input in the bracket picks the same tiers: take one just above its lower threshold.
    probe = thresholds[bracket - 1] + 1 if bracket > 0 else Decimal(0)

    def rate(*candidates: Decimal | TieredPrices | None) -> Decimal | None:
        for price in candidates:
            if price is None:
                continue
            if isinstance(price, TieredPrices):
                chosen = price.base
                for tier in sorted(price.tiers, key=lambda t: t.start):
                    if probe > tier.start:
                        chosen = tier.price
                return chosen
            return price
        return None

    assert mp is not None
    input_rate = rate(mp.input_mtok)
    if input_rate is None:
        return None
    return _Rates(
        input=input_rate,
        cache_read=_first(rate(mp.cache_read_mtok), input_rate),
        cache_write_5m=_first(rate(mp.cache_write_5m_mtok, mp.cache_write_mtok), input_rate),
        cache_write_1h=_first(rate(mp.cache_write_1h_mtok, mp.cache_write_mtok), input_rate),
        output=rate(mp.output_mtok),  # None: no output price (then only output-free usage is priced)
        reasoning=_first(rate(mp.output_reasoning_mtok, mp.output_mtok), Decimal(0)),
        per_thousand_requests=_first(rate(mp.requests_kcount), Decimal(0)),
    )


def _breakdown(
    usage: Usage,
    model: str,
    priced_as: str | None,
    info: ModelInfo | None,
    rates: _Rates | None,
    source: PriceSource | None,
) -> CostBreakdown:
    costs: dict[str, Decimal | None] = dict.fromkeys(_COMPONENTS)
    total = None
    if rates is not None:
        amounts = _amounts(usage, rates)
        costs = {k: _tidy(v) for k, v in amounts.items()}
        total = _tidy(sum(amounts.values(), Decimal(0)))
    return CostBreakdown(
        model=model, priced_as=priced_as, provider=info.provider if info is not None else None, usage=usage,
        **costs, total=total, priced=rates is not None, source=source, estimated=usage.estimated,
    )  # fmt: skip


def _amounts(u: Usage, rates: _Rates) -> dict[str, Decimal]:
    """The USD cost of each component of ``u`` at ``rates`` (exact Decimals)."""
    write_5m = u.cache_write_tokens - u.cache_write_1h_tokens
    output = (rates.output or Decimal(0)) * (u.output_tokens - u.reasoning_tokens)
    return {
        "input_cost": rates.input * u.uncached_input_tokens / _MTOK,
        "cache_read_cost": rates.cache_read * u.cache_read_tokens / _MTOK,
        "cache_write_cost": (rates.cache_write_5m * write_5m + rates.cache_write_1h * u.cache_write_1h_tokens)
        / _MTOK,
        "output_cost": (output + rates.reasoning * u.reasoning_tokens) / _MTOK,
        "request_cost": rates.per_thousand_requests * u.requests / 1000,
    }


def cost_or_none(
    usage: Usage,
    model: str,
    *,
    registry: ModelRegistry | None = None,
    prices: PriceTable | None = None,
    at: datetime | None = None,
) -> Decimal | None:
    """The total of :func:`cost_of` without the per-component breakdown; ``None`` when unpriced.

    The ledger's hot path: the same rates and arithmetic as :func:`price_of`, without building
    a :class:`CostBreakdown`.

    Raises:
        InvalidInputError: ``usage`` holds more than :data:`MAX_PRICED` tokens or requests, or
            ``at`` is not a time-zone-aware ``datetime``.
        UnknownModelError: Neither the registry nor an override knows ``model``.
    """
    _check_priced(usage)
    check_at(at)
    table = prices if prices is not None else default_price_table()
    reg = registry if registry is not None else default_registry()
    override = table.get(model)
    if override is None:
        info = reg.get(model)
        override = table.get(info.canonical)
        rates = _override_rates(override) if override is not None else _genai_rates(info, usage, at)
    else:
        rates = _override_rates(override)
    if rates is None:
        return None
    return sum(_amounts(usage, rates).values(), Decimal(0))


def cost_nanos(
    model: str,
    input_tokens: int,
    output_tokens: int,
    *,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
    cache_write_1h_tokens: int = 0,
    reasoning_tokens: int = 0,
    requests: int = 1,
    round_up: bool = False,
    registry: ModelRegistry | None = None,
    prices: PriceTable | None = None,
    minute: int | None = None,
) -> int | None:
    """:func:`cost_or_none` in integer nano-USD, for figures already validated (the ledger's hot path).

    The same rates, in exact integer arithmetic on rates scaled once per price (no Decimal per
    call); rounded up (``round_up``, for reservations) or half to even, as
    :func:`~tokenbudget_core.money.usd_to_nanos` rounds. ``None`` when unpriced. ``minute``
    (epoch minutes, default now) is when the call was made: genai-prices has time-of-day prices
    (DeepSeek's off-peak hours) and dated price changes.

    Raises:
        InvalidInputError: ``model`` is not a string, or a figure is not a non-negative int
            (named, e.g. ``input_tokens``): a cheap check, not the validation of a public entry.
        UnknownModelError: Neither the registry nor an override knows ``model``.
    """
    figures = (input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cache_write_1h_tokens,
               reasoning_tokens, requests)  # fmt: skip
    if not isinstance(model, str) or not all(type(n) is int and n >= 0 for n in figures):
        _refuse_figures(model, figures)
    table = prices if prices is not None else default_price_table()
    reg = registry if registry is not None else default_registry()
    if minute is None:
        minute = int(time.time() // 60)
    found = resolved_price(model, reg, table, minute)
    if isinstance(found, _Tiers):  # genai-prices picks a tier by the input tokens of the request
        per_request: int | Decimal = input_tokens if requests <= 1 else Decimal(input_tokens) / requests
        found = _bracket_scaled(
            found.canonical, found.provider, minute, bisect.bisect_left(found.thresholds, per_request)
        )
    return scaled_cost(
        found, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cache_write_1h_tokens,
        reasoning_tokens, requests, round_up,
    )  # fmt: skip


_FIGURES = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
            "cache_write_1h_tokens", "reasoning_tokens", "requests")  # fmt: skip


def _refuse_figures(model: object, figures: tuple[object, ...]) -> None:
    """The named error of :func:`cost_nanos`'s arguments, when its fast check failed (an int
    subclass, a counter's ``TokenCount``, passes here)."""
    if not isinstance(model, str) or not model.strip():
        raise InvalidInputError("model", "must be a non-empty model name", value=model)
    for name, n in zip(_FIGURES, figures, strict=True):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InvalidInputError(name, "must be a non-negative int", value=n)


def resolved_price(model: str, registry: ModelRegistry, table: PriceTable, minute: int) -> _Resolved:
    """What :func:`cost_nanos` prices ``model`` with in ``minute`` (epoch minutes): its scaled
    rates and whether it prices output, its tiers (:class:`_Tiers`), or ``None`` (unpriced).
    Cached per model, registry and table until either changes (their ``version``) or the minute
    passes (genai-prices are dated). A caller that keeps the answer must check those three itself.

    Raises:
        UnknownModelError: Neither the registry nor an override knows ``model``.
    """
    key = (model, id(registry), id(table))
    entry = _resolved.get(key)
    if (
        entry is None
        or entry[0] is not registry
        or entry[1] is not table
        or entry[2] != registry.version
        or entry[3] != table.version
        or entry[4] != minute
    ):
        entry = (
            registry, table, registry.version, table.version, minute,
            _resolve(model, registry, table, minute),
        )  # fmt: skip
        if len(_resolved) >= 4096:
            _resolved.clear()
        _resolved[key] = entry
    return entry[5]


def scaled_cost(
    found: tuple[_Scaled, bool] | None,
    input_tokens: int,
    output_tokens: int,
    cache_read_tokens: int,
    cache_write_tokens: int,
    cache_write_1h_tokens: int,
    reasoning_tokens: int,
    requests: int,
    round_up: bool,
) -> int | None:
    """The cost in nano-USD of figures already validated, on rates :func:`resolved_price` found
    (a tier's already picked): exact integer arithmetic, rounded up (``round_up``) or half to
    even. ``None`` when unpriced (no rates, or output tokens and no output price)."""
    if found is None or (not found[1] and output_tokens > 0):
        return None
    scale, r_in, r_read, r_5m, r_1h, r_out, r_reason, r_req = found[0]
    per_mtok = (
        r_in * (input_tokens - cache_read_tokens - cache_write_tokens)
        + r_read * cache_read_tokens
        + r_5m * (cache_write_tokens - cache_write_1h_tokens)
        + r_1h * cache_write_1h_tokens
        + r_out * (output_tokens - reasoning_tokens)
        + r_reason * reasoning_tokens
    )
    # USD = per_mtok / 1e6 / scale + r_req * requests / 1000 / scale; nano-USD is 1e9 times that.
    numerator = per_mtok * 1000 + r_req * requests * 1_000_000
    if round_up:
        return -(-numerator // scale)
    q, r = divmod(numerator, scale)
    return q + 1 if 2 * r > scale or (2 * r == scale and q & 1) else q


_Scaled: TypeAlias = tuple[int, int, int, int, int, int, int, int]


@dataclass(frozen=True, slots=True)
class _Tiers:
    """A genai-prices model whose rates depend on the input tokens of the request."""

    canonical: str
    provider: str
    thresholds: tuple[Decimal, ...]


_Resolved: TypeAlias = "tuple[_Scaled, bool] | _Tiers | None"
_resolved: dict[tuple[str, int, int], tuple[ModelRegistry, PriceTable, int, int, int, _Resolved]] = {}
"""What :func:`cost_nanos` found a model's price to be, per (model, registry, table): the registry,
the table, their versions and the minute it holds for (genai-prices are dated), and the price."""


def _resolve(model: str, registry: ModelRegistry, table: PriceTable, minute: int) -> _Resolved:
    """``model``'s scaled rates and whether it prices output, its tiers, or ``None`` (unpriced).

    Raises:
        UnknownModelError: Neither the registry nor an override knows ``model``.
    """
    override = table.get(model)
    if override is None:
        info = registry.get(model)
        override = table.get(info.canonical)
        if override is None:
            thresholds = _thresholds(info.canonical, info.provider, minute)
            if thresholds:
                return _Tiers(info.canonical, info.provider, thresholds)
            return _bracket_scaled(info.canonical, info.provider, minute, 0)
    return _scaled_override(override), True


@functools.lru_cache(maxsize=4096)
def _scaled(rates: _Rates) -> _Scaled:
    """``rates`` as integers over one power of ten: ``(scale, input, cache_read, ...)``."""
    values = (
        rates.input, rates.cache_read, rates.cache_write_5m, rates.cache_write_1h,
        rates.output or Decimal(0), rates.reasoning, rates.per_thousand_requests,
    )  # fmt: skip
    places = max(max(0, -int(v.as_tuple().exponent)) for v in values)
    scale = 10**places
    ints = [int(v * scale) for v in values]
    assert all(i == v * scale for i, v in zip(ints, values, strict=True))
    return (scale, *ints)


@functools.lru_cache(maxsize=4096)
def _bracket_scaled(canonical: str, provider: str, minute: int, bracket: int) -> tuple[_Scaled, bool] | None:
    """:func:`_bracket_rates` scaled, and whether the model has an output price (cached)."""
    if _model_prices(canonical, provider, minute) is None:
        return None
    rates = _bracket_rates(canonical, provider, minute, bracket)
    if rates is None:
        return None
    return _scaled(rates), rates.output is not None


@functools.lru_cache(maxsize=1024)
def _scaled_override(override: PriceOverride) -> _Scaled:
    return _scaled(_override_rates(override))


def _tidy(amount: Decimal) -> Decimal:
    """Drop trailing zeros (``0.00`` -> ``0``, ``0.0035000`` -> ``0.0035``) without going to exponents."""
    n = amount.normalize()
    return n if n.as_tuple().exponent <= 0 else n.quantize(Decimal(1))  # type: ignore[operator]
