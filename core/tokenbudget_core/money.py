"""Money as integers: nano-USD (1e-9 USD) for every stored amount.

Costs are computed as :class:`~decimal.Decimal` by :mod:`tokenbudget_core.pricing` and
converted here, once, to integers, so totals never accumulate floating-point error and
every store can add them atomically (Redis ``HINCRBY``, SQLite integers). A nano-dollar
resolves a single token of the cheapest models; 64-bit integers hold $9.2 billion.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal
from typing import Any

from .errors import InvalidInputError

__all__ = ["MAX_USD", "NANOS_PER_USD", "decimal_text", "jsonable", "nanos_to_usd", "usd_to_nanos"]

NANOS_PER_USD = 1_000_000_000


MAX_USD = Decimal(10) ** 15
"""The largest amount :func:`usd_to_nanos` converts (a quadrillion dollars: far past any bill,
well inside what :mod:`decimal` converts exactly)."""


def usd_to_nanos(amount: Decimal | int | str, *, round_up: bool = False, field: str = "amount") -> int:
    """USD to integer nano-USD; ``round_up`` for reservations (never under-reserve).

    Args:
        amount: The amount in USD.
        round_up: Round up to the next nano-USD (else half to even).
        field: The caller's name for ``amount``, named in errors (e.g. ``saved_usd``).

    Raises:
        InvalidInputError: The amount is negative, not finite, not a number, a float or a bool.
    """
    if isinstance(amount, bool | float):
        raise InvalidInputError(
            field,
            f"must be a Decimal, int or decimal string, not a {type(amount).__name__}",
            value=amount,
            fix='Decimal("0.01")',
        )
    try:
        value = Decimal(amount)
    except (ArithmeticError, TypeError, ValueError) as e:
        raise InvalidInputError(field, f"{amount!r} is not a number", value=amount) from e
    if not value.is_finite() or value < 0:
        raise InvalidInputError(field, "must be a finite, non-negative amount", value=amount)
    if value > MAX_USD:  # compared in USD: the conversion itself would overflow Decimal's context
        raise InvalidInputError(field, f"must be at most ${MAX_USD:,}", value=amount, fix="check the amount")
    rounding = ROUND_CEILING if round_up else ROUND_HALF_EVEN
    return int((value * NANOS_PER_USD).to_integral_value(rounding=rounding))


def nanos_to_usd(nanos: int) -> Decimal:
    """Integer nano-USD back to ``Decimal`` USD (exact).

    Raises:
        InvalidInputError: ``nanos`` is not an int (a bool, float, str or ``None``).
    """
    if isinstance(nanos, bool) or not isinstance(nanos, int):
        problem = f"must be an int (nano-USD), got {type(nanos).__name__}"
        raise InvalidInputError("nanos", problem, value=nanos)
    return Decimal(nanos) / NANOS_PER_USD


def decimal_text(amount: Decimal) -> str:
    """``amount`` as plain decimal text, the way money is written in JSON and tables.

    ``str(Decimal)`` switches to scientific notation for small amounts (a gpt-4o-mini token,
    ``nanos_to_usd(150)``, prints ``1.5E-7``; a zero quotient ``0E-9``); this never does, and
    drops trailing zeros: ``0.00000015``, ``0``, ``0.0035``, ``12.5``.

    Example:
        >>> decimal_text(nanos_to_usd(150)), decimal_text(Decimal("0E-9")), decimal_text(Decimal("1E+3"))
        ('0.00000015', '0', '1000')
    """
    text = format(amount, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def jsonable(value: Any) -> Any:
    """``value`` with every :class:`~decimal.Decimal` in it (in dicts, lists and tuples, as lists)
    written with :func:`decimal_text`; anything else as it is."""
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
