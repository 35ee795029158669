"""How the core's errors become HTTP responses: one JSON shape, the field named, never a 500 for bad input.

Every error body is ``{"error": <kind>, "message": <text>, ...}`` plus the figures of the error:

======================================  ======  ==================================================
error                                   status  extra keys
======================================  ======  ==================================================
request body / query fails the schema   422     ``field`` (``body.max_tokens``), ``detail`` (list),
                                                ``fix``
the body is not a JSON object           422     ``field`` = ``body``, ``fix``, ``detail`` (malformed,
                                                not UTF-8, not sent as JSON, empty, an array...)
:class:`InvalidInputError` (and sub)    422     ``field``, ``fix``; ``limit``/``required`` on overflow
:class:`UnknownModelError`              422     ``field`` = ``model``, ``fix``, ``model``, ``suggestions``
:class:`UnpricedModelError`             422     ``field`` = ``model``, ``fix``, ``model``
:class:`BudgetExceededError`            429     ``budget``, ``scope``, ``limit``, ``used``, ``requested``,
                                                ``step``
:class:`BudgetUnavailableError`         503     ``store``
:class:`StoreRefusedError`              503     (``store_refused``) ``store``, ``fix``: the store is up
                                                but refuses the ledger (credentials, ACL)
token counting / encoding / extra down  503
no such route (``not_found``)           404
method the route does not take          405     (``method_not_allowed``) the ``Allow`` header
anything unexpected: a bug              500     (``internal_error``) no internals: see the log
======================================  ======  ==================================================

Authentication (401), body size (413) and, without a token, a ``Host`` that is not this
machine's (421) are answered by :mod:`~tokenbudget_core.server.guards` in the same shape.
:class:`ErrorBody` is that shape in the OpenAPI schema; :func:`error_responses` declares a
route's error answers with it.
"""

from __future__ import annotations

from decimal import Decimal
from http import HTTPStatus
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tokenbudget_core.errors import (
    BudgetExceededError,
    BudgetUnavailableError,
    ContextOverflowError,
    EncodingUnavailableError,
    InvalidInputError,
    MissingDependencyError,
    StoreRefusedError,
    TokenBudgetError,
    TokenCountError,
    UnknownModelError,
    UnpricedModelError,
)
from tokenbudget_core.money import decimal_text

__all__ = [
    "ErrorBody",
    "error_body",
    "error_responses",
    "http_error_body",
    "status_and_body",
    "unavailable_body",
    "validation_body",
]


class ErrorDetail(BaseModel):
    """One schema failure of a ``422`` (``validation_error``)."""

    loc: list[str] = Field(description="Where: ['body', 'max_tokens'], ['query', 'top'].")
    msg: str
    type: str


Figure = str | int
"""A budget figure: US dollars as a decimal string, tokens as an integer."""


class ErrorBody(BaseModel):
    """Every error answer of the service: ``error`` and ``message``, plus the figures of that
    error (only the keys it has)."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(
        description="The kind: validation_error, invalid_input, context_overflow, unknown_model, "
        "unpriced_model, budget_exceeded, budget_unavailable, store_refused, unavailable, "
        "unauthorized, body_too_large, misdirected_request, not_found, method_not_allowed, "
        "internal_error."
    )
    message: str = Field(description="What went wrong, for a person.")
    field: str | None = Field(None, description="The offending field (422), e.g. body.max_tokens.")
    fix: str | None = Field(None, description="What to send instead, or what to fix.")
    detail: list[ErrorDetail] | None = Field(None, description="Every schema failure (validation_error).")
    budget: str | None = Field(None, description="The refusing budget (429).")
    scope: str | None = Field(None, description="Whose budget it is (429).")
    limit: Figure | None = Field(None, description="The budget's limit (429), or the body limit (413).")
    used: Figure | None = Field(None, description="Spent + reserved before this call (429).")
    requested: Figure | None = Field(None, description="This call's worst case (429).")
    step: str | None = Field(None, description="The ladder step (429: soft_refusal when the ladder refused).")
    store: str | None = Field(None, description="The ledger's store, its secrets masked (503).")
    model: str | None = Field(None, description="The model named (unknown_model, unpriced_model).")
    suggestions: list[str] | None = Field(None, description="Close model names (unknown_model).")
    required: int | None = Field(None, description="Tokens the prompt needs (context_overflow).")


_ANSWERS = {
    401: "A token is configured and the request's 'Authorization: Bearer <token>' is missing or wrong.",
    413: "The body is larger than the service's limit (1 MiB by default).",
    421: "No token is configured and the request names a Host that is not this machine's "
    "(against DNS rebinding).",
    422: "The body or query fails the schema, or the core refuses the input: 'field' names it, "
    "'fix' says what to send.",
    429: "A budget would be exceeded (budget_exceeded, with the budget's figures).",
    503: "The ledger's store is unreachable or takes no writes (budget_unavailable), refuses the "
    "ledger (store_refused), or token counting is unavailable (unavailable).",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of a route's error answers, each with the one :class:`ErrorBody`
    shape (a ``422`` declared so replaces FastAPI's own ``{detail}`` one, which the service never
    answers).

    Example:
        >>> sorted(error_responses(429, 503))
        [429, 503]
    """
    return {s: {"model": ErrorBody, "description": _ANSWERS[s]} for s in statuses}


_STORE_REFUSED_FIX = (
    "check the store's credentials in the service's store URL and the store's ACL (the ledger's user "
    "must be allowed its commands), then retry; retrying alone does not help"
)
"""What to do about a :class:`StoreRefusedError` that brings no ``fix`` of its own."""


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


_UNPRICED_OK = ("/usage/record", "/budget/commit")
"""Endpoints taking ``unknown_model: "unpriced"`` (record an unknown model's call unpriced)."""


def status_and_body(error: TokenBudgetError, path: str | None = None) -> tuple[int, dict[str, Any]]:
    """The status code and JSON body for one of the core's errors (``path``: the endpoint's, for
    a fix only some endpoints take).

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
        field = getattr(error, "field", "model")
        close = f"did you mean {error.suggestions[0]!r}? " if error.suggestions else ""
        fix = (
            f"{close}send a {field} the service knows, or register it on the service "
            "(a models file in $TOKENBUDGET_MODELS)"
        )
        if field == "model" and path is not None and path.endswith(_UNPRICED_OK):
            fix += ', or send "unknown_model": "unpriced" to record the call unpriced'
        elif field != "model":
            fix += f", or leave {field} out"
        return 422, error_body(
            "unknown_model",
            f"{field}: the service does not know the model {error.model!r}",
            field=field,
            fix=fix,
            model=error.model,
            suggestions=error.suggestions,
        )
    if isinstance(error, UnpricedModelError):
        return 422, error_body(
            "unpriced_model",
            message,
            field="model",
            fix="give the model a price on the service (a prices file in $TOKENBUDGET_PRICES)",
            model=error.model,
        )
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
    if isinstance(error, StoreRefusedError):  # the server's configuration, never the request's fault
        return 503, error_body(
            "store_refused",
            message,
            store=getattr(error, "store", None),
            fix=getattr(error, "fix", None) or _STORE_REFUSED_FIX,
        )
    if isinstance(error, TokenCountError | EncodingUnavailableError | MissingDependencyError):
        return 503, error_body("unavailable", message)
    return 400, error_body("error", message)


_CHECK_STORE = "Check that the store is up and that the service's --store (create_app's store URL) names it"
_FAIL_OPEN = (
    "; to let calls through while the store is down (their usage spooled and replayed once it is back), "
    "run the service with --on-unavailable open (create_app(..., on_unavailable='open'))"
)


def unavailable_body(
    error: BudgetUnavailableError, *, fails_open: bool, probe: bool = False
) -> tuple[int, dict[str, Any]]:
    """:func:`status_and_body` for a store the service cannot reach, saying what it means for the
    service (the ledger's own text speaks to an app: "the call was not sent", "choose
    on_unavailable='open'"): ``503``, ``budget_unavailable``, the store named.

    Args:
        error: The ledger's error.
        fails_open: The service's ledger lets calls through while the store is down
            (``on_unavailable="open"``): the advice to run it so is left out.
        probe: For ``/health``: no request was refused, the service says what it cannot do.

    An error with a consequence of its own (usage that could not be spooled either) keeps it.
    """
    message = str(error)
    if message == str(BudgetUnavailableError(error.store, error.detail)):  # the ledger's default text
        advice = _CHECK_STORE + ("" if fails_open else _FAIL_OPEN)
        if probe:
            meanwhile = (
                "reservations are let through unchecked (their usage spooled) and reports cannot be read"
                if fails_open
                else "reservations are refused (usage recorded is spooled)"
            )
            consequence = f"until it is back, {meanwhile}. {advice}."
        else:
            consequence = f"nothing was reserved or read for this request. {advice}."
        message = str(BudgetUnavailableError(error.store, error.detail, consequence=consequence))
    return 503, error_body("budget_unavailable", message, store=error.store)


def http_error_body(
    status: int, detail: Any, *, method: str, path: str, allow: str | None = None
) -> dict[str, Any]:
    """The body for an HTTP error the router raises itself: an unknown route (404), a method the
    route does not take (405, ``allow`` being its ``Allow`` header), or any other status.

    Example:
        >>> http_error_body(405, "Method Not Allowed", method="GET", path="/budgets", allow="GET")["error"]
        'method_not_allowed'
    """
    if status == 404:
        return error_body("not_found", f"no endpoint {path}; the endpoints are listed at /docs")
    if status == 405:
        use = f"; use {allow}" if allow else ""
        return error_body("method_not_allowed", f"{method} is not allowed on {path}{use}")
    try:
        kind = HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        kind = "error"
    return error_body(kind, str(detail) if detail else kind.replace("_", " "))


_SCHEMA = "each endpoint's fields and their types are listed at /docs (and /openapi.json)"
"""Where a client reads what an endpoint takes: the end of every schema failure's ``fix``."""

_SEND_JSON = "send one JSON object, UTF-8 encoded, with the header 'Content-Type: application/json'"
_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


def _json_kind(value: Any) -> str:
    return "null" if value is None else _JSON_KINDS.get(type(value), type(value).__name__)


def _where(doc: Any, pos: Any) -> str:
    """`` at line L, column C`` of ``pos`` in ``doc`` (as :class:`json.JSONDecodeError` counts), or ``""``."""
    if not isinstance(doc, str) or not isinstance(pos, int) or not 0 <= pos <= len(doc):
        return ""
    line = doc.count("\n", 0, pos) + 1
    column = pos - doc.rfind("\n", 0, pos)
    return f" at line {line}, column {column}"


def _body_problem(error: dict[str, Any], body: Any) -> tuple[str, str | None] | None:
    """``(problem, fix)`` when the body as a whole is wrong (not JSON, empty, not an object), or ``None``."""
    loc = tuple(error.get("loc", ()))
    kind = error.get("type")
    if kind == "json_invalid":  # FastAPI's loc is ("body", <char offset>)
        reason = str((error.get("ctx") or {}).get("error") or error.get("msg") or "cannot be parsed")
        reason = reason[:1].lower() + reason[1:]
        return f"is not valid JSON: {reason}{_where(body, loc[1] if len(loc) > 1 else None)}", _SEND_JSON
    if loc != ("body",):
        return None
    if kind == "missing":
        return "is empty", _SEND_JSON
    if kind in ("model_attributes_type", "model_type", "dict_type"):
        given = error.get("input")
        if isinstance(given, bytes | bytearray):  # FastAPI parses JSON only when the content type says so
            return "was not sent as JSON", _SEND_JSON
        return f"must be a JSON object, not {_json_kind(given)}", None
    return None


def _schema_fix(error: dict[str, Any], msg: str) -> str:
    """What to do about one schema failure (pydantic's ``type``): never ``None``, so every 422 says."""
    kind = str(error.get("type", ""))
    ctx = error.get("ctx") or {}
    names = [str(p) for p in error.get("loc", ()) if not isinstance(p, int) and not str(p).isdigit()]
    name = names[-1] if len(names) > 1 else "the field"  # loc starts with "body" / "query"
    if kind == "extra_forbidden":
        return f"remove {name!r} (a misspelt field?); {_SCHEMA}"
    if kind == "missing":
        return f"send {name!r}; {_SCHEMA}"
    if kind == "timezone_aware":
        return "give the time with its zone: 2026-11-24T09:30:00Z or 2026-11-24T09:30:00+01:00"
    if kind in ("literal_error", "enum") and ctx.get("expected"):
        return f"use one of {ctx['expected']}"
    reason = msg[:1].lower() + msg[1:] if msg else "it is invalid"
    return f"send {name!r} as the schema says ({reason}); {_SCHEMA}"


def validation_body(errors: Any, body: Any = None) -> dict[str, Any]:
    """The 422 body for a request that fails the schema, naming the first offending field.

    A body that is not JSON at all (malformed, not UTF-8, nested too deeply, sent without
    ``Content-Type: application/json``), empty, or not an object is named ``body``, with where
    parsing stopped and a ``fix``. A field a schema validator refused with an
    :class:`InvalidInputError` (``reservation.day``) carries its problem and ``fix``; any other
    schema failure a ``fix`` for its kind (remove an unknown field, give a time its zone, use one
    of the allowed values), so a 422's ``fix`` is never ``null``.

    Args:
        errors: pydantic's / FastAPI's ``errors()`` list (each with ``loc``, ``msg``, ``type``).
        body: The request body as FastAPI read it (the JSON text when it could not be parsed).
    """
    errors = list(errors)
    detail = [
        {
            "loc": [str(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in errors
    ]
    if errors and (problem := _body_problem(errors[0], body)) is not None:
        text, fix = problem
        detail[0] = {"loc": ["body"], "msg": text, "type": detail[0]["type"]}
        message = f"body: {text}" + (f"; {fix}" if fix else "")
        fix = fix or f'send the fields as one JSON object ({{"model": ..., ...}}); {_SCHEMA}'
        return error_body("validation_error", message, field="body", fix=fix, detail=detail)
    first = detail[0] if detail else {"loc": [], "msg": "invalid request"}
    field = ".".join(first["loc"]) or "body"
    fix = _schema_fix(errors[0], str(first["msg"])) if errors else _SCHEMA
    cause = (errors[0].get("ctx") or {}).get("error") if errors else None
    if isinstance(cause, InvalidInputError):  # a schema's own rule: its problem and fix, as the core's
        first["msg"] = cause.problem
        fix = cause.fix or fix
    message = f"{field}: {first['msg']}" + (f"; {fix}" if fix else "")
    return error_body("validation_error", message, field=field, fix=fix, detail=detail)
