"""What provider prompt caching saved or cost, in tokens and US dollars.

:func:`prompt_cache_report` reads any :class:`~tokenbudget_core.usage.Usage`: Anthropic's
cache reads and 5-minute / 1-hour writes (placed with
:func:`~tokenbudget_core.prompt_caching.plan_prompt_cache`), OpenAI's automatic
``cached_tokens``. It prices what the reads saved against the plain input price and what
the writes cost on top of it, as :class:`~decimal.Decimal`; an unknown price is ``None``,
never 0.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from .price_overrides import PriceTable, check_price_options
from .pricing import check_at, price_of
from .registry import ModelRegistry
from .usage import Usage

__all__ = ["PromptCacheReport", "prompt_cache_report"]


@dataclass(frozen=True, kw_only=True, slots=True)
class PromptCacheReport:
    """What provider prompt caching did for a usage, in tokens and US dollars.

    Amounts are :class:`~decimal.Decimal`; when the model has no known price every amount is
    ``None`` (never 0) and ``priced`` is ``False``.

    Example:
        >>> r = prompt_cache_report(Usage(input_tokens=10_000, output_tokens=100,
        ...     cache_read_tokens=9_000), "claude-sonnet-4-5")
        >>> r.read_savings, r.write_premium, r.net_savings
        (Decimal('0.0243'), Decimal('0'), Decimal('0.0243'))
    """

    model: str
    """The model the usage was priced for."""
    input_tokens: int
    """All input tokens, cache reads and writes included."""
    cache_read_tokens: int
    """Input tokens read from the cache (OpenAI's ``cached_tokens``)."""
    cache_write_tokens: int
    """Input tokens written to the cache (Anthropic), all TTLs."""
    cache_write_1h_tokens: int
    """The part of the writes with the 1-hour TTL."""
    hit_rate: float
    """``cache_read_tokens / input_tokens`` (0.0 without input)."""
    cost: Decimal | None
    """What the usage cost."""
    uncached_cost: Decimal | None
    """What the same usage would have cost with no prompt caching."""
    read_savings: Decimal | None
    """Saved by cache reads (plain input price minus the read price)."""
    write_premium: Decimal | None
    """Paid extra for cache writes (write price minus the plain input price)."""
    net_savings: Decimal | None
    """``uncached_cost - cost`` = ``read_savings - write_premium`` (negative: caching cost money)."""
    priced: bool
    """Whether a price was found."""


def prompt_cache_report(
    usage: Usage,
    model: str,
    *,
    registry: ModelRegistry | None = None,
    prices: PriceTable | None = None,
    at: datetime | None = None,
) -> PromptCacheReport:
    """Cache reads and writes of ``usage`` and the money they saved or cost on ``model``.

    Works for any provider's usage read with ``Usage.from_*``: Anthropic's cache reads and
    5-minute / 1-hour writes, OpenAI's ``cached_tokens`` (automatic caching: no write premium).
    Every figure is priced at the tier of the whole request, so the parts add up exactly.

    Args:
        usage: What the call (or calls) used.
        model: The model name.
        registry: The model registry (default: the process-wide one).
        prices: Price overrides (default: the process-wide table).
        at: When the call was made (a datetime with a time zone), for date-dependent prices.

    Raises:
        InvalidInputError: ``usage`` is not a :class:`Usage`, ``model`` is not a name,
            ``registry`` is not a :class:`ModelRegistry`, ``prices`` not a :class:`PriceTable`,
            or ``at`` not a datetime with a time zone (as the ledger requires of a time).
        UnknownModelError: The model is unknown.

    Example:
        >>> r = prompt_cache_report(Usage(input_tokens=5_000, output_tokens=50,
        ...     cache_write_tokens=4_000), "claude-sonnet-4-5")
        >>> r.write_premium, r.net_savings
        (Decimal('0.003'), Decimal('-0.003'))
    """
    check_price_options(registry, prices)
    check_at(at)

    def total(u: Usage) -> Decimal | None:
        return price_of(u, model, registry=registry, prices=prices, at=at).total

    cost = total(usage)
    no_reads = replace(usage, cache_read_tokens=0)
    no_writes = replace(usage, cache_write_tokens=0, cache_write_1h_tokens=0)
    uncached = replace(no_reads, cache_write_tokens=0, cache_write_1h_tokens=0)
    plain_reads, plain_writes, uncached_cost = total(no_reads), total(no_writes), total(uncached)
    priced = cost is not None
    return PromptCacheReport(
        model=model, input_tokens=usage.input_tokens, cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens, cache_write_1h_tokens=usage.cache_write_1h_tokens,
        hit_rate=usage.cache_read_tokens / usage.input_tokens if usage.input_tokens else 0.0,
        cost=cost, uncached_cost=uncached_cost,
        read_savings=_diff(plain_reads, cost), write_premium=_diff(cost, plain_writes),
        net_savings=_diff(uncached_cost, cost), priced=priced,
    )  # fmt: skip


def _diff(a: Decimal | None, b: Decimal | None) -> Decimal | None:
    if a is None or b is None:
        return None
    d = (a - b).normalize()
    return d if d.as_tuple().exponent <= 0 else d.quantize(Decimal(1))  # type: ignore[operator]
