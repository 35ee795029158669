"""The HTTP service: :func:`create_app` builds the FastAPI app, :func:`serve` runs it with uvicorn.

Each endpoint translates its JSON body into one core call and the result back into JSON;
errors are mapped by :mod:`~tokenbudget_core.server.error_responses`, auth and the body limit
are enforced by :mod:`~tokenbudget_core.server.guards` before any endpoint runs. Endpoints are
plain functions, run in FastAPI's thread pool, because the ledger's store calls block.

Reservations are stateless on the server: ``POST /budget/reserve`` returns the reservation,
and the client sends it back to ``/budget/commit`` or ``/budget/release``; the store keeps the
reservation's state per request id, so a commit is applied once whichever worker gets it.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from tokenbudget_core._version import __version__
from tokenbudget_core.alerts import AlertSink
from tokenbudget_core.attribution import Attribution, in_force
from tokenbudget_core.budget_status import budget_rows, features_of
from tokenbudget_core.budgets import BudgetPolicy, load_policy
from tokenbudget_core.counting import TokenCounter
from tokenbudget_core.errors import (
    BudgetExceededError,
    BudgetUnavailableError,
    InvalidInputError,
    StoreRefusedError,
    TokenBudgetError,
)
from tokenbudget_core.ledger import MAX_LEASE_SECONDS, Charge, Ledger, Reservation
from tokenbudget_core.money import decimal_text, jsonable
from tokenbudget_core.pricing import price_of
from tokenbudget_core.prompt_builder import PromptBuilder
from tokenbudget_core.reports import Dimension, build_report
from tokenbudget_core.stores.base import redact_url
from tokenbudget_core.truncation import truncate_text_detailed
from tokenbudget_core.usage import Usage

from .dashboard import dashboard_data, static_file
from .error_responses import (
    error_body,
    error_responses,
    http_error_body,
    status_and_body,
    unavailable_body,
    validation_body,
)
from .guards import ANY_HOST, RequestGuard, is_loopback
from .json_body import JSONBodyRoute
from .metrics import CONTENT_TYPE, SERIES_TOP, HttpMetrics, HttpStats, ledger_metrics, render
from .schemas import (
    SEND_RESERVATION_BACK,
    CommitBody,
    CostEstimateBody,
    CountBody,
    PromptBuildBody,
    RecordBody,
    ReleaseBody,
    ReservationBody,
    ReserveBody,
    TruncateBody,
    UsageBody,
)

__all__ = ["DEFAULT_MAX_BODY_BYTES", "create_app", "serve"]

logger = logging.getLogger("tokenbudget.server")

DEFAULT_MAX_BODY_BYTES = 1_048_576
"""1 MiB: room for a long prompt with its context, not for an accidental upload."""


def _errors(*statuses: int, public: bool = False) -> dict[int | str, dict[str, Any]]:
    """A route's error answers for the OpenAPI schema: ``statuses``, plus the guard's ``421``
    (a foreign Host without a token) and, unless the path is public, ``401``."""
    return error_responses(*sorted({421, *statuses, *(() if public else (401,))}))


_BODY = (413, 422)
"""What a route with a JSON body may answer: too large, or refused."""


def _usage(body: UsageBody) -> Usage:
    return Usage(**body.model_dump())


_OLDEST_DAY = MAX_LEASE_SECONDS // 86_400 + 1
"""How many days before today a reservation's day may be: the longest lease, and a day for a
reservation made just before midnight."""


def _reservation(body: ReservationBody, ledger: Ledger) -> Reservation:
    """The reservation a client sent back (commit and release need only its identity and payer).

    Raises:
        InvalidInputError: Its day (already ``YYYY-MM-DD``) is one no reservation can be of: after
            tomorrow, or more than the longest lease and a day before today, in the ledger's time
            zone. The store keeps a reservation's state per day and request id, so an edited day
            would be charged again, as another call.
    """
    day, today = _dt.date.fromisoformat(body.day), _dt.date.fromisoformat(ledger.day())
    zone = f"in the ledger's time zone, {ledger.tz.key}"
    if day > today + _dt.timedelta(days=1):
        raise InvalidInputError(
            "body.reservation.day",  # as the schema names it when the day is not YYYY-MM-DD
            f"is after tomorrow (today is {today} {zone}): /budget/reserve returns today's date",
            value=body.day,
            fix=SEND_RESERVATION_BACK,
        )
    if day < today - _dt.timedelta(days=_OLDEST_DAY):
        raise InvalidInputError(
            "body.reservation.day",
            f"is more than {_OLDEST_DAY} days before today (today is {today} {zone}): no reservation "
            "is held longer than the longest lease (a week); charge usage that old with /usage/record "
            "and its 'at'",
            value=body.day,
            fix=SEND_RESERVATION_BACK,
        )
    minute = body.priced_minute
    if minute is not None:
        now = int(ledger.clock() // 60)
        if not now - _OLDEST_DAY * 1440 <= minute <= now + 2 * 1440:  # (a day may be tomorrow's)
            raise InvalidInputError(
                "body.reservation.priced_minute",
                f"is {minute} (epoch minutes), not a minute from {_OLDEST_DAY} days ago to 2 days ahead "
                f"(now is {now}): /budget/reserve returns the minute it priced the call at",
                value=minute,
                fix=SEND_RESERVATION_BACK,
            )
    ident = body.model_dump(exclude={"reserved_usd", "step"})
    return Reservation(**ident, overhead=None, reserved_usd=None, step="normal")


def _reservation_json(r: Reservation) -> dict[str, Any]:
    return {
        "request_id": r.request_id,
        "day": r.day,
        "model": r.model,
        "feature": r.feature,
        "user": r.user,
        "conversation": r.conversation,
        "input_tokens": r.input_tokens,
        "max_output_tokens": r.max_output_tokens,
        "reserved_usd": None if r.reserved_usd is None else decimal_text(r.reserved_usd),
        "step": r.step,
        "unchecked": r.unchecked,
        "priced_minute": r.priced_minute,
    }


def _charge_json(c: Charge) -> dict[str, Any]:
    return {
        "request_id": c.request_id,
        "usage": c.usage.as_dict(),
        "cost_usd": None if c.cost_usd is None else decimal_text(c.cost_usd),
        "applied": c.applied,
        "spooled": c.spooled,
        "routing_saved_usd": None if c.routing_saved_usd is None else decimal_text(c.routing_saved_usd),
    }


def create_app(
    ledger_or_store_url: Ledger | str | None = None,
    *,
    token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    policy: BudgetPolicy | None = None,
    timezone: str | None = None,
    alerts: Sequence[str | AlertSink] | None = None,
    on_unavailable: Literal["closed", "open"] | None = None,
    allowed_hosts: Sequence[str] = (),
) -> FastAPI:
    """The tokenbudget HTTP service over one ledger.

    Args:
        ledger_or_store_url: A :class:`~tokenbudget_core.ledger.Ledger`, or a store URL
            (default: ``$TOKENBUDGET_STORE``, else ``sqlite:///tokenbudget.db``).
        token: The bearer token every non-public endpoint requires (``None``: no auth; an empty
            or blank one is refused). Surrounding whitespace is stripped: a secret read from a
            file with its trailing newline is the secret.
        max_body_bytes: Larger request bodies are refused with ``413``.
        policy: The budget policy, when a store URL is given (a ledger brings its own).
        timezone: The IANA time zone the ledger's days are in, when a store URL is given
            (default ``UTC``; a ledger brings its own). Use the zone of the apps sharing the store.
        alerts: The ledger's alert sinks, when a store URL is given (a ledger brings its own):
            what ``Ledger(alerts=)`` takes (``"log"``, webhook URLs, callables; default
            ``["log"]``). An alert fires once per store, sent by the sinks of whichever ledger's
            commit crossed the threshold: give the service the sinks the apps sharing the store
            give their ledgers, or the alerts its requests cross go elsewhere.
        on_unavailable: What the ledger does while its store is down, when a store URL is given
            (a ledger brings its own): ``"closed"`` (default) refuses reservations with ``503``;
            ``"open"`` lets them through unchecked and spools the usage, replayed once the store
            is back (``Ledger(on_unavailable=)``).
        allowed_hosts: Without a token, the ``Host`` names beyond loopback ones (``localhost``,
            ``127.0.0.0/8``, ``[::1]``, any port) that a request reaching the service through a
            loopback address may name; any other is answered ``421``, so a web page cannot reach
            the service by rebinding its own name to ``127.0.0.1`` (DNS rebinding). ``["*"]``
            answers any ``Host`` (a proxy in front authenticates and forwards its own ``Host``).
            Unused with a token. Requests reaching it through another interface are not checked.

    Raises:
        InvalidInputError: A bad argument, named.

    Example:
        >>> from fastapi.testclient import TestClient
        >>> client = TestClient(create_app("memory://"))
        >>> client.post("/tokens/count", json={"model": "gpt-4o", "text": "Hello, world!"}).json()["tokens"]
        4
    """
    if isinstance(ledger_or_store_url, Ledger):
        if policy is not None:
            raise InvalidInputError(
                "policy", "a Ledger brings its own policy", fix="pass Ledger(..., policy=...)"
            )
        if timezone is not None:
            raise InvalidInputError(
                "timezone", "a Ledger brings its own time zone", fix="pass Ledger(..., timezone=...)"
            )
        if alerts is not None:
            raise InvalidInputError(
                "alerts", "a Ledger brings its own alert sinks", fix="pass Ledger(..., alerts=...)"
            )
        if on_unavailable is not None:
            raise InvalidInputError(
                "on_unavailable",
                "a Ledger brings its own",
                value=on_unavailable,
                fix="pass Ledger(..., on_unavailable=...)",
            )
        ledger = ledger_or_store_url
    elif ledger_or_store_url is None or isinstance(ledger_or_store_url, str):
        zone = "UTC" if timezone is None else timezone
        mode = "closed" if on_unavailable is None else on_unavailable
        ledger = Ledger(ledger_or_store_url, policy=policy, timezone=zone, alerts=alerts, on_unavailable=mode)
    else:
        raise InvalidInputError(
            "ledger_or_store_url", "must be a Ledger or a store URL", value=ledger_or_store_url
        )

    app = FastAPI(
        title="tokenbudget",
        version=__version__,
        description="Count, truncate and price tokens; reserve and record LLM spend; report it.",
    )
    app.router.route_class = JSONBodyRoute  # every body that fails to parse is a 422 on ``body``
    app.state.ledger = ledger
    http_stats = HttpStats()

    @app.exception_handler(TokenBudgetError)
    async def _core_error(request: Request, error: TokenBudgetError) -> JSONResponse:
        if isinstance(error, BudgetUnavailableError):  # what it means for the service, not an app
            status, body = unavailable_body(error, fails_open=ledger.on_unavailable == "open")
        else:
            status, body = status_and_body(error, request.url.path)
        return JSONResponse(body, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_body(error.errors(), error.body), status_code=422)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
        """The router's own errors (unknown route, wrong method) in the service's one shape."""
        headers = dict(error.headers or {})
        allow = next((v for k, v in headers.items() if k.lower() == "allow"), None)
        body = http_error_body(
            error.status_code, error.detail, method=request.method, path=request.url.path, allow=allow
        )
        return JSONResponse(body, status_code=error.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
        """A bug, not bad input: the same shape, no internals (the traceback goes to the server log)."""
        return JSONResponse(
            error_body("internal_error", "the server failed to answer this request; see its log"),
            status_code=500,
        )

    # -- tokens, prompts, prices (no ledger) ----------------------------------------------------

    @app.post("/tokens/count", tags=["tokens"], responses=_errors(*_BODY, 503))
    def count_tokens(body: CountBody) -> dict[str, Any]:
        """Count the tokens of plain text, or of a chat request (messages and tools)."""
        if (body.text is None) == (body.messages is None):
            raise InvalidInputError("text", "give exactly one of text and messages")
        if body.tools is not None and body.messages is None:
            raise InvalidInputError("tools", "tools are counted with messages", fix="pass messages too")
        counter = TokenCounter.for_model(body.model)
        if body.text is not None:
            return counter.count(body.text).as_dict()
        assert body.messages is not None
        return counter.count_messages(body.messages, body.tools).as_dict()

    @app.post("/tokens/truncate", tags=["tokens"], responses=_errors(*_BODY, 503))
    def truncate(body: TruncateBody) -> dict[str, Any]:
        """Cut text to at most ``max_tokens`` tokens of the model, marker included."""
        r = truncate_text_detailed(body.text, body.max_tokens, body.strategy, body.model, marker=body.marker)
        return {
            "text": r.text,
            "tokens_before": r.tokens_before,
            "tokens_after": r.tokens_after,
            "truncated": r.truncated,
            "strategy": r.strategy,
            "exact": r.exact,
            "method": r.method,
        }

    @app.post("/prompt/build", tags=["tokens"], responses=_errors(*_BODY, 503))
    def build_prompt(body: PromptBuildBody) -> dict[str, Any]:
        """Assemble system prompt, examples, context, history and user input within the budget."""
        builder = PromptBuilder(
            body.model,
            max_tokens=body.max_tokens,
            reserve_output=body.reserve_output,
            context_strategy=body.context_strategy,
            on_overflow=body.on_overflow,
        )
        built = builder.build(
            system=body.system,
            examples=body.examples,
            context=body.context,
            history=body.history,
            user=body.user,
        )
        return built.as_dict()

    @app.post("/cost/estimate", tags=["cost"], responses=_errors(*_BODY))
    def estimate_cost(body: CostEstimateBody) -> dict[str, Any]:
        """Price a usage on a model, per component (an unknown price is ``null``, never 0)."""
        try:
            usage = _usage(UsageBody(**body.model_dump(exclude={"model"})))
        except InvalidInputError as e:  # the figures are flat in this body: name them as sent
            if not e.field.startswith("usage."):
                raise
            field = e.field.removeprefix("usage.")
            raise InvalidInputError(field, e.problem, value=e.value, fix=e.fix) from e
        return price_of(usage, body.model).as_dict()

    # -- the ledger -------------------------------------------------------------------------------

    writable = _WriteProbe(ledger)

    # (no 429: a refusal is an answer here, 200 with allowed false)
    @app.post("/budget/check", tags=["budget"], responses=_errors(*_BODY, 503))
    def check_budget(body: ReserveBody) -> dict[str, Any]:
        """Would this call fit every budget now? Answered from the store's totals: holds nothing
        (a ``request_id`` is validated as reserve validates it, and nothing is held under it).
        A store that answers reads but takes no writes (a Redis at ``maxmemory``) is answered as
        reserve meets it: ``503`` when the service fails closed, ``unchecked`` when it fails open."""
        unchecked = False
        try:
            writable()  # a check reads only: without this, a full store would read as "allowed"
        except BudgetUnavailableError:
            if ledger.on_unavailable == "closed":
                raise
            unchecked = True  # reserve would let the call through unchecked
        try:
            checked = ledger.check(**body.model_dump())
        except BudgetExceededError as e:
            # reserve refuses a per-call limit before the store; any other refusal is the store's
            # totals', which a reserve the store cannot take lets through unchecked
            if not unchecked or e.budget.endswith("_per_call"):
                return {"allowed": False} | status_and_body(e)[1]
            worst = e.requested if isinstance(e.requested, Decimal) else None
            return {
                "allowed": True,
                "step": "normal",
                "reserved_usd": None if worst is None else decimal_text(worst),
                "unchecked": True,
            }
        worst = checked.worst_case_usd
        return {
            "allowed": True,
            "step": "normal" if unchecked else checked.step,
            "reserved_usd": None if worst is None else decimal_text(worst),
            "unchecked": unchecked or checked.unchecked,
        }

    @app.post("/budget/reserve", tags=["budget"], status_code=201, responses=_errors(*_BODY, 429, 503))
    def reserve(body: ReserveBody) -> dict[str, Any]:
        """Reserve the worst case of a call atomically (429 when a budget would be exceeded)."""
        return _reservation_json(ledger.reserve(**body.model_dump()))

    @app.post("/budget/commit", tags=["budget"], responses=_errors(*_BODY, 503))
    def commit(body: CommitBody) -> dict[str, Any]:
        """Charge what a reserved call used; once per request id (``applied`` is false on a repeat)."""
        charge = ledger.commit(
            _reservation(body.reservation, ledger),
            _usage(body.usage),
            cache_hit=body.cache_hit,
            saved_usd=body.saved_usd,
            model=body.model,
            premium_model=body.premium_model,
            unknown_model=body.unknown_model,
        )
        return _charge_json(charge)

    @app.post("/budget/release", tags=["budget"], responses=_errors(*_BODY, 503))
    def release(body: ReleaseBody) -> dict[str, Any]:
        """Give a reservation back (the call failed); a no-op after a commit or a release."""
        return {
            "request_id": body.reservation.request_id,
            "released": ledger.release(_reservation(body.reservation, ledger)),
        }

    @app.post("/usage/record", tags=["usage"], responses=_errors(*_BODY, 503))
    def record(body: RecordBody) -> dict[str, Any]:
        """Charge usage that was never reserved (idempotent per request id)."""
        fields = body.model_dump(exclude={"usage"})
        return _charge_json(ledger.record(_usage(body.usage), **fields))

    @app.get("/usage/report", tags=["usage"], responses=_errors(422, 503))
    def usage_report(
        day: Annotated[str | None, Query(description="One day, YYYY-MM-DD.")] = None,
        last_days: Annotated[int | None, Query(ge=1, le=366, description="The N days ending today.")] = None,
        by: Annotated[list[Literal["feature", "user", "model"]] | None, Query()] = None,
        top: Annotated[int, Query(ge=1, le=1000)] = 10,
    ) -> dict[str, Any]:
        """Spend by day, feature, user and model; cost per active user per day; p50/p95; projection."""
        if day is not None and last_days is not None:  # the query's names, and what to send instead
            raise InvalidInputError(
                "last_days",
                "give only one of day and last_days",
                value=last_days,
                fix="send day=YYYY-MM-DD for one day, or last_days=N for the N days ending today",
            )
        dims: tuple[Dimension, ...] = tuple(by) if by else ("feature", "user", "model")
        return build_report(ledger, day=day, last_days=last_days, by=dims, top=top).as_dict()

    @app.get("/budgets", tags=["budget"], responses=_errors(422, 503))
    def budgets(
        feature: Annotated[str | None, Query(min_length=1, max_length=256)] = None,
        user: Annotated[str | None, Query(min_length=1, max_length=256)] = None,
        no_user: Annotated[
            bool, Query(description="Show the per-user budgets of calls naming no user (one anonymous user).")
        ] = False,
    ) -> dict[str, Any]:
        """Today's budgets: limit, spent + reserved, headroom, used share and ladder step of each
        (per-user budgets for ``user``, or with ``no_user`` those of calls that name none)."""
        features: list[str | None] = [feature] if feature else features_of(ledger.policy)
        rows, steps = budget_rows(ledger, features, user, no_user=no_user)
        plain = jsonable(rows)
        return {"day": ledger.day(), "user": user, "budgets": plain, "steps": steps}

    # -- operations -------------------------------------------------------------------------------

    @app.head("/health", include_in_schema=False)  # (one operation in the schema: GET's)
    @app.get("/health", tags=["operations"], responses=_errors(503, public=True))
    def health() -> JSONResponse:
        """200 when the ledger's store answers and takes writes, else 503 (unreachable, full, or
        refusing the ledger); usage spooled during an outage is replayed once it answers.
        ``HEAD`` answers the same status (uptime checkers probe with it), without the body."""
        try:
            ledger.probe()
        except BudgetUnavailableError as e:  # every other endpoint's body, + status; no call refused
            status, body = unavailable_body(e, fails_open=ledger.on_unavailable == "open", probe=True)
            return JSONResponse(body | {"status": "down"}, status_code=status)
        except StoreRefusedError as e:
            status, body = status_and_body(e)
            return JSONResponse(body | {"status": "down"}, status_code=status)
        except OSError as e:
            return JSONResponse(
                error_body("budget_unavailable", str(e), store=None, status="down"), status_code=503
            )
        return JSONResponse({"status": "ok", "version": __version__})

    @app.get("/metrics", tags=["operations"], response_class=Response, responses=_errors())
    def metrics() -> Response:
        """Prometheus metrics: HTTP requests and latency; today's spend, cache and budget figures."""

        def budgets() -> list[dict[str, Any]]:
            ledger.probe()  # store_up 0 for a store that answers but takes no writes
            return budget_rows(ledger, features_of(ledger.policy), None)[0]

        ledger_families = ledger_metrics(
            lambda: build_report(
                ledger, last_days=1, by=("feature", "model"), top=SERIES_TOP, percentiles=False
            ),  # no percentile series: no read of today's per-call cost samples on each scrape
            budgets,
        )
        return Response(render([*http_stats.families(), *ledger_families]), media_type=CONTENT_TYPE)

    # -- dashboard --------------------------------------------------------------------------------

    @app.get("/dashboard", tags=["dashboard"], response_class=HTMLResponse, responses=_errors(public=True))
    def dashboard() -> Response:
        """The dashboard page (its data comes from ``/dashboard/data``)."""
        content, media_type = static_file("dashboard.html")
        return Response(content, media_type=media_type)

    @app.get("/dashboard/static/{name}", tags=["dashboard"], include_in_schema=False)
    def dashboard_static(name: str) -> Response:
        try:
            content, media_type = static_file(name)
        except InvalidInputError as e:
            return JSONResponse(error_body("not_found", str(e)), status_code=404)
        return Response(content, media_type=media_type, headers={"cache-control": "no-cache"})

    @app.get("/dashboard/data", tags=["dashboard"], responses=_errors(422, 503))
    def dashboard_json(last_days: Annotated[int, Query(ge=1, le=366)] = 14) -> dict[str, Any]:
        """Everything the dashboard draws, for the last N days."""
        return dashboard_data(ledger, last_days=last_days)

    # Starlette builds the stack when the app first starts: the guard runs inside the metrics, so
    # refused requests (401, 413, 421) are counted too. The guard is built now to validate its options.
    RequestGuard(app.router, token=token, max_body_bytes=max_body_bytes, allowed_hosts=allowed_hosts)
    app.add_middleware(_RequestsOwnPayer)
    app.add_middleware(
        RequestGuard, token=token, max_body_bytes=max_body_bytes, allowed_hosts=tuple(allowed_hosts)
    )
    app.add_middleware(HttpMetrics, stats=http_stats, routes=frozenset(_paths(app)))
    return app


class _WriteProbe:
    """Whether the ledger's store takes writes, probed as ``/health`` probes it (a one-second
    mark) and remembered for :attr:`TTL_S`: a check reads totals only, which a Redis at
    ``maxmemory`` still answers while it refuses every reservation.

    Calling it returns when the last probe passed; otherwise it raises that probe's error
    (:class:`BudgetUnavailableError`, or :class:`StoreRefusedError` for a store refusing the ledger).
    """

    TTL_S = 1.0
    """How long a probe's verdict holds: a check a second at most pays for a write."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._lock = threading.Lock()
        self._until = 0.0
        self._error: BudgetUnavailableError | StoreRefusedError | None = None

    def __call__(self) -> None:
        with self._lock:  # one probe at a time: concurrent checks wait for its verdict
            now = time.monotonic()
            if now >= self._until:
                self._error = self._probe()
                self._until = time.monotonic() + self.TTL_S
            error = self._error
        if error is not None:
            raise error.with_traceback(None)  # the verdict, not the traceback of the request that probed

    def _probe(self) -> BudgetUnavailableError | StoreRefusedError | None:
        try:
            self.ledger.probe()
        except (BudgetUnavailableError, StoreRefusedError) as e:
            return e
        except OSError as e:  # a backend that leaked a raw connection error
            return BudgetUnavailableError(redact_url(self.ledger.store.url), str(e))
        return None


class _RequestsOwnPayer:
    """ASGI middleware running each request under an empty attribution: the service charges and
    reads for the ids a request names (its body's ``feature`` / ``user``, ``/budgets``' query),
    never those of an ``attribute()`` block a host app that mounts it put in force around the
    request (a block's ids win over a ledger call's arguments, which would charge an admin's
    session for a client's usage). Endpoints run in worker threads with a copy of this context."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        with in_force(Attribution()):
            await self.app(scope, receive, send)


def _paths(app: FastAPI) -> list[str]:
    return [path for route in app.routes if isinstance(path := getattr(route, "path", None), str)]


def serve(
    store_url: str | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    allow_no_auth: bool = False,
    policy_path: str | os.PathLike[str] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    timezone: str = "UTC",
    alerts: Sequence[str | AlertSink] | None = None,
    on_unavailable: Literal["closed", "open"] = "closed",
) -> None:
    """Run the service with uvicorn until interrupted (what ``tokenbudget serve`` does).

    Args:
        store_url: The ledger's store (default: ``$TOKENBUDGET_STORE``, else ``sqlite:///tokenbudget.db``).
        host: The interface to listen on. Without a token, a loopback one only (see ``allow_no_auth``).
        port: The TCP port.
        token: The bearer token (``None``: no auth; an empty string is refused).
        allow_no_auth: Listen on a host that is not loopback without a token (when a proxy in
            front authenticates); a warning is logged at startup. It also answers any ``Host``
            (the proxy forwards its own); otherwise, without a token, only requests naming a
            loopback ``Host`` or ``host`` itself are answered (``421``: see :func:`create_app`'s
            ``allowed_hosts``).
        policy_path: A budget policy TOML file (``None``: no limits, attribution only).
        max_body_bytes: Larger request bodies are refused with ``413``.
        timezone: The IANA time zone the ledger's days are in (the apps' ``Ledger(timezone=)``).
        alerts: The ledger's alert sinks (the apps' ``Ledger(alerts=)``; default ``["log"]``):
            see :func:`create_app`.
        on_unavailable: ``"closed"`` refuses reservations while the store is down; ``"open"`` lets
            them through unchecked and spools their usage (see :func:`create_app`).

    Raises:
        InvalidInputError: A bad argument, policy file or time zone, named; ``token`` when it is
            ``None`` for a host that is not loopback and ``allow_no_auth`` is false.
        ListenError: The address cannot be listened on (the port is taken, the host is not
            local): an ``OSError``.
        OSError: The server failed to start.
    """
    import uvicorn

    if not isinstance(host, str) or not host.strip():
        raise InvalidInputError(
            "host",
            "must be a host name or address (a non-empty string)",
            value=host,
            fix="e.g. host='127.0.0.1'",
        )
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= 65_535:
        raise InvalidInputError("port", "must be a TCP port, 1 to 65535", value=port, fix="e.g. port=8000")
    if token is None and not is_loopback(host):
        if not allow_no_auth:
            raise InvalidInputError(
                "token",
                f"is needed to listen on {host!r}, which is not a loopback address: without a token "
                "anyone who can reach the port can record spend, read reports and use up budgets",
                fix="pass token=..., listen on 127.0.0.1, or pass allow_no_auth=True when a proxy "
                "in front of the service authenticates",
            )
        logger.warning(
            "tokenbudget: auth is off and the service listens on %r, which is not a loopback "
            "address: anyone who can reach port %d can record spend, read reports and use up "
            "budgets (allowed by allow_no_auth / --allow-no-auth)",
            host,
            port,
        )
    policy = load_policy(policy_path) if policy_path is not None else None
    app = create_app(
        store_url,
        token=token,
        policy=policy,
        max_body_bytes=max_body_bytes,
        timezone=timezone,
        alerts=alerts,
        on_unavailable=on_unavailable,
        # against DNS rebinding without a token: the name it was bound to, loopback ones, no other
        allowed_hosts=[ANY_HOST] if allow_no_auth else [host],
    )
    sock = _listen(host, port)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info"))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:
        raise OSError(f"uvicorn stopped before serving on {host}:{port} (see the log above)")


class ListenError(OSError):
    """:func:`serve` could not listen on its address (the port is taken, the host is not an
    address of this machine): the one ``OSError`` that is the address's to fix. Any other
    ``OSError`` :func:`serve` raises comes from elsewhere (building the ledger, the server)."""


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` as uvicorn binds one, so a taken port is a
    :class:`ListenError` here rather than uvicorn's own exit."""
    try:
        sock = socket.socket(family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as e:
        raise ListenError(e.errno, e.strerror or str(e)) from e
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ListenError(e.errno, e.strerror or str(e)) from e
    return sock
