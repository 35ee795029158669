"""Which provider errors deserve another model, and trying a chain of models in order.

Duck-typed over the SDKs (no imports of ``openai``, ``anthropic`` or ``httpx``): the status code
is read from ``status_code`` / ``status`` / ``response.status_code``, and without one the
exception's class names decide. :class:`~tokenbudget_core.routing.TierRouter` uses these for its
fallback chain; adapters can call them directly.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from .errors import InvalidInputError, TokenBudgetError

__all__ = ["RETRYABLE_STATUS", "acall_with_fallbacks", "call_with_fallbacks", "http_status", "is_retryable"]

T = TypeVar("T")

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})
"""HTTP statuses worth trying another model for: timeouts, conflicts, rate limits, overload, 5xx."""

_RETRYABLE_NAMES = ("ratelimit", "overload", "timeout", "apiconnectionerror", "serviceunavailable")


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of a provider SDK's error (``status_code`` / ``status`` /
    ``response.status_code``), else ``None`` (no response: a connection error, a timeout, or not
    a provider error at all)."""
    for status in (
        getattr(exc, "status_code", None),
        getattr(exc, "status", None),
        getattr(getattr(exc, "response", None), "status_code", None),
    ):
        if isinstance(status, int) and not isinstance(status, bool):
            return status
    return None


def is_retryable(exc: BaseException) -> bool:
    """Whether a provider error is worth retrying on another model (duck-typed, no SDK imports).

    True for timeouts (``TimeoutError``, SDK timeout classes), rate limits (429), overload (529,
    503) and other 5xx, read from ``status_code`` / ``status`` / ``response.status_code``, and
    for SDK classes named for them (``RateLimitError``, ``APITimeoutError``, ``OverloadedError``,
    ``APIConnectionError``). Never for tokenbudget's own errors (a refused budget stays refused)
    nor for the caller's mistakes (400, 401, 403, 404, 422).

    Example:
        >>> is_retryable(TimeoutError())
        True
        >>> is_retryable(ValueError("bad request"))
        False
    """
    if isinstance(exc, TokenBudgetError):
        return False
    if isinstance(exc, TimeoutError):
        return True
    status = http_status(exc)
    if status is not None:
        return status in RETRYABLE_STATUS or 500 <= status < 600
    names = "".join(c.__name__.lower() for c in type(exc).__mro__)
    return any(n in names for n in _RETRYABLE_NAMES)


def _check(models: Sequence[str]) -> None:
    if isinstance(models, str) or not models:
        raise InvalidInputError("models", "must be a non-empty list of model names", value=models)


def _check_fn(fn: object, *, is_async: bool) -> None:
    """``fn`` is a callable of the kind the caller awaits (or not): an ``async`` function given to
    the sync twin would return an un-awaited coroutine, whose errors no fallback would see."""
    if not callable(fn):
        fix = "pass the function that makes the call"
        raise InvalidInputError("fn", "must be a callable (model) -> result", value=fn, fix=fix)
    if not is_async and inspect.iscoroutinefunction(fn):
        raise InvalidInputError(
            "fn",
            "is an async function: its coroutine would never be awaited here",
            value=fn,
            fix="use the async twin: acall_with_fallbacks(...) / await TierRouter.acall(...)",
        )


def call_with_fallbacks(models: Sequence[str], fn: Callable[[str], T]) -> T:
    """``fn(model)`` for each model in turn until one succeeds; only retryable errors move on.

    Raises:
        InvalidInputError: ``models`` is empty, or ``fn`` is not callable or is an ``async``
            function (use :func:`acall_with_fallbacks`).
        Exception: The first non-retryable error, or the last model's error when every model failed.

    Example:
        >>> call_with_fallbacks(["a", "b"], lambda m: m.upper())
        'A'
    """
    _check(models)
    _check_fn(fn, is_async=False)
    for i, model in enumerate(models):
        try:
            return fn(model)
        except Exception as e:
            if i == len(models) - 1 or not is_retryable(e):
                raise
    raise AssertionError("unreachable")  # pragma: no cover


async def acall_with_fallbacks(models: Sequence[str], fn: Callable[[str], Awaitable[T]]) -> T:
    """Async twin of :func:`call_with_fallbacks`.

    Raises:
        InvalidInputError: ``models`` is empty, ``fn`` is not callable, or it returned something
            that cannot be awaited (a sync function: use :func:`call_with_fallbacks`).
    """
    _check(models)
    _check_fn(fn, is_async=True)
    for i, model in enumerate(models):
        try:
            result = fn(model)
            if not inspect.isawaitable(result):
                raise InvalidInputError(
                    "fn",
                    f"returned a {type(result).__name__}, not an awaitable",
                    value=fn,
                    fix="pass an async function, or use the sync twin: call_with_fallbacks / TierRouter.call",
                )
            return await result
        except Exception as e:
            if i == len(models) - 1 or not is_retryable(e):
                raise
    raise AssertionError("unreachable")  # pragma: no cover
