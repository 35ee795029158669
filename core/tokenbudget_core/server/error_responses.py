"""How the core's errors become HTTP responses: one JSON shape, the field named, never a 500 for bad input.

Every error body is ``{"error": <kind>, "message": <text>, ...}`` plus the figures of the error:

======================================  ======  ==================================================
error                                   status  extra keys
======================================  ======  ==================================================
request body / query fails the schema   422     ``field`` (``body.max_tokens``), ``detail`` (list)
:class:`InvalidInputError` (and sub)    422     ``field``, ``fix``; ``limit``/``required`` on overflow
:class:`UnknownModelError`              422     ``field`` = ``model``, ``model``, ``suggestions``
:class:`UnpricedModelError`             422     ``field`` = ``model``, ``model``
:class:`BudgetExceededError`            429     ``budget``, ``scope``, ``limit``, ``used``, ``requested``,
                                                ``step``
:class:`BudgetUnavailableError`         503     ``store``
token counting / encoding / extra down  503
======================================  ======  ==================================================

Authentication (401) and body size (413) are answered by :mod:`~tokenbudget_core.server.guards`
in the same shape.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tokenbudget_core.errors import (
    BudgetExceededError,
    BudgetUnavailableError,
    ContextOverflowError,
    EncodingUnavailableError,
    InvalidInputError,
    MissingDependencyError,
    TokenBudgetError,
    TokenCountError,
    UnknownModelError,
    UnpricedModelError,
)
from tokenbudget_core.money import decimal_text

__all__ = ["error_body", "status_and_body", "validation_body"]


def error_body(kind: str, message: str, **extra: Any) -> dict[str, Any]:
    """The JSON body of every error response."""
    return {"error": kind, "message": message, **{k: _plain(v) for k, v in extra.items()}}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def status_and_body(error: TokenBudgetError) -> tuple[int, dict[str, Any]]:
    """The status code and JSON body for one of the core's errors.

    Example:
        >>> status_and_body(InvalidInputError("max_tokens", "must be >= 0"))[0]
        422
    """
    message = str(error)
    if isinstance(error, ContextOverflowError):
        return 422, error_body(
            "context_overflow",
            message,
            field=error.field,
            fix=error.fix,
            limit=error.limit,
            required=error.required,
        )
    if isinstance(error, InvalidInputError):
        return 422, error_body("invalid_input", message, field=error.field, fix=error.fix)
    if isinstance(error, UnknownModelError):
        return 422, error_body(
            "unknown_model", message, field="model", model=error.model, suggestions=error.suggestions
        )
    if isinstance(error, UnpricedModelError):
        return 422, error_body("unpriced_model", message, field="model", model=error.model)
    if isinstance(error, BudgetExceededError):
        return 429, error_body(
            "budget_exceeded",
            message,
            budget=error.budget,
            scope=error.scope,
            limit=error.limit,
            used=error.used,
            requested=error.requested,
            step=error.step,
        )
    if isinstance(error, BudgetUnavailableError):
        return 503, error_body("budget_unavailable", message, store=error.store)
    if isinstance(error, TokenCountError | EncodingUnavailableError | MissingDependencyError):
        return 503, error_body("unavailable", message)
    return 400, error_body("error", message)


def validation_body(errors: Any) -> dict[str, Any]:
    """The 422 body for a request that fails the schema, naming the first offending field.

    Args:
        errors: pydantic's / FastAPI's ``errors()`` list (each with ``loc``, ``msg``, ``type``).
    """
    detail = [
        {
            "loc": [str(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in errors
    ]
    first = detail[0] if detail else {"loc": [], "msg": "invalid request"}
    field = ".".join(first["loc"]) or "body"
    return error_body("validation_error", f"{field}: {first['msg']}", field=field, detail=detail)
