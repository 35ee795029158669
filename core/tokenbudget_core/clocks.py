"""Clocks the ledger, the response caches and their stores are given (``clock=``): checked when
given (:func:`check_clock`) and at each reading (:func:`clock_reading`), so a clock returning
NaN, infinity, a ``bool`` or a coroutine is named instead of making every expiry test false.
"""

from __future__ import annotations

import inspect
import math

from .errors import InvalidInputError

__all__ = ["check_clock", "clock_reading", "finite"]


def check_clock(clock: object) -> None:
    """Validate a ``clock`` option: a (plain, not ``async``) callable returning epoch seconds.

    Raises:
        InvalidInputError: ``clock`` is not callable, or is a coroutine function (its reading
            would be a coroutine, never a time).
    """
    if not callable(clock) or inspect.iscoroutinefunction(clock):
        raise InvalidInputError(
            "clock",
            "must be a (not async) callable returning epoch seconds",
            value=clock,
            fix="pass e.g. clock=time.time (the default), or leave it out",
        )


def clock_reading(now: object) -> float:
    """A clock's reading, checked: epoch seconds, a finite ``int`` or ``float`` (not a ``bool``).

    A NaN or infinite reading would make every expiry test false (an entry stored then would
    never expire), so it is refused with the rest.

    Raises:
        InvalidInputError: Named ``clock``, with what it returned.
    """
    if isinstance(now, bool) or not isinstance(now, int | float) or not finite(now):
        if inspect.iscoroutine(now):
            now.close()  # an async clock's reading: never awaited, closed so it is not warned about
        raise InvalidInputError(
            "clock",
            f"must return epoch seconds (a number), returned {now!r}",
            value=now,
            fix="return a finite number of epoch seconds, e.g. time.time()",
        )
    return float(now)


def finite(value: float) -> bool:
    """``math.isfinite``, False for an int too large to be a float."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False
