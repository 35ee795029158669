"""Money as integers: nano-USD (1e-9 USD) for every stored amount.

Costs are computed as :class:`~decimal.Decimal` by :mod:`tokenbudget_core.pricing` and
converted here, once, to integers, so totals never accumulate floating-point error and
every store can add them atomically (Redis ``HINCRBY``, SQLite integers). A nano-dollar
resolves a single token of the cheapest models; 64-bit integers hold $9.2 billion.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal

from .errors import InvalidInputError

__all__ = ["NANOS_PER_USD", "nanos_to_usd", "usd_to_nanos"]

NANOS_PER_USD = 1_000_000_000


def usd_to_nanos(amount: Decimal | int | str, *, round_up: bool = False) -> int:
    """USD to integer nano-USD; ``round_up`` for reservations (never under-reserve).

    Raises:
        InvalidInputError: The amount is negative, not finite, or a float.
    """
    if isinstance(amount, bool | float):
        raise InvalidInputError(
            "amount", "must be a Decimal, int or decimal string, not a float", value=amount
        )
    try:
        value = Decimal(amount)
    except ArithmeticError as e:
        raise InvalidInputError("amount", f"{amount!r} is not a number", value=amount) from e
    if not value.is_finite() or value < 0:
        raise InvalidInputError("amount", "must be a finite, non-negative amount", value=amount)
    rounding = ROUND_CEILING if round_up else ROUND_HALF_EVEN
    return int((value * NANOS_PER_USD).to_integral_value(rounding=rounding))


def nanos_to_usd(nanos: int) -> Decimal:
    """Integer nano-USD back to ``Decimal`` USD (exact)."""
    return Decimal(nanos) / NANOS_PER_USD
