"""Prometheus metrics of the service, in the text exposition format (version 0.0.4), hand-written.

Two kinds:

* **HTTP**, counted by :class:`HttpMetrics` (ASGI middleware): ``tokenbudget_http_requests_total``
  by method, route and status, and the ``tokenbudget_http_request_duration_seconds`` histogram by
  route. Routes are the app's own route paths (a route with a parameter as its pattern,
  ``/dashboard/static/{name}``) and methods those of :data:`METHODS`; any other path or
  method is ``other``, so a scanner (authenticated or not: refused requests are counted too)
  cannot blow up the label cardinality.
* **Ledger**, read at scrape time by :func:`ledger_metrics` from today's report and budgets:
  spend, requests, cache hits and savings, active users, cost per active user, spend by feature
  and model (the :data:`SERIES_TOP` biggest each, the rest summed in one ``(other)`` series, so
  the series always add up to the day's spend), and each budget's used share and headroom.
  ``tokenbudget_store_up`` is 0 (and the ledger figures are left out) when the store cannot be
  reached, or refuses the ledger (wrong credentials, an ACL).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from decimal import Decimal
from typing import Any

from starlette.routing import compile_path

from tokenbudget_core.errors import BudgetUnavailableError, StoreRefusedError
from tokenbudget_core.money import decimal_text
from tokenbudget_core.reports import Dimension, Report

from .guards import route_path

__all__ = [
    "CONTENT_TYPE",
    "METHODS",
    "OTHER_LABEL",
    "SERIES_TOP",
    "HttpMetrics",
    "HttpStats",
    "ledger_metrics",
    "render",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Latency histogram buckets, seconds."""
SERIES_TOP = 100
"""Spend series per dimension (features, models) before the rest is summed as ``(other)``: bounds
the label cardinality an app's ids can create."""
METHODS = frozenset({"GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"})
"""The HTTP methods reported as themselves in ``tokenbudget_http_requests_total``; any other
(the HTTP server may pass on any token as a method) is ``other``."""
OTHER_LABEL = "(other)"
"""The label value of the series summing the features (models) past :data:`SERIES_TOP`."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Sample = tuple[str, Mapping[str, str], float | int | Decimal]
Family = tuple[str, str, str, list[Sample]]
"""``(name, type, help, samples)``; each sample ``(suffix, labels, value)``."""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float | int | Decimal) -> str:
    if isinstance(value, float) and value == float("inf"):
        return "+Inf"
    if isinstance(value, Decimal):
        return decimal_text(value)  # plain digits: 0, not 0E-9
    return str(value)


def render(families: Iterable[Family]) -> str:
    """Metric families in the Prometheus text format."""
    lines: list[str] = []
    for name, kind, help_text, samples in families:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for suffix, labels, value in samples:
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            lines.append(
                f"{name}{suffix}{{{label_text}}} {_number(value)}"
                if labels
                else f"{name}{suffix} {_number(value)}"
            )
    return "\n".join(lines) + "\n"


class HttpStats:
    """Request counts and latencies by method, route and status (for the middleware and ``/metrics``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str], int] = defaultdict(int)
        self._buckets: dict[str, list[int]] = defaultdict(lambda: [0] * len(BUCKETS))
        self._sums: dict[str, float] = defaultdict(float)
        self._totals: dict[str, int] = defaultdict(int)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        with self._lock:
            self._counts[(method, route, str(status))] += 1
            buckets = self._buckets[route]
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    buckets[i] += 1
            self._sums[route] += seconds
            self._totals[route] += 1

    def families(self) -> list[Family]:
        """The HTTP metric families, as counted so far."""
        with self._lock:
            counts = sorted(self._counts.items())
            latency: list[Sample] = []
            for route in sorted(self._totals):
                for bound, n in zip(BUCKETS, self._buckets[route], strict=True):
                    latency.append(("_bucket", {"route": route, "le": str(bound)}, n))
                latency.append(("_bucket", {"route": route, "le": "+Inf"}, self._totals[route]))
                latency.append(("_sum", {"route": route}, round(self._sums[route], 6)))
                latency.append(("_count", {"route": route}, self._totals[route]))
        return [
            (
                "tokenbudget_http_requests_total",
                "counter",
                "HTTP requests answered, by method, route and status.",
                [("", {"method": m, "route": r, "status": s}, n) for (m, r, s), n in counts],
            ),
            ("tokenbudget_http_request_duration_seconds", "histogram", "Time to answer a request.", latency),
        ]


class HttpMetrics:
    """ASGI middleware feeding :class:`HttpStats`.

    Args:
        app: The application to measure.
        stats: Where the figures go.
        routes: The app's route paths: a request is reported by the one its path matches (as
            the router matches them: less the prefix the app is mounted at; a route with a
            parameter by its pattern, ``/dashboard/static/{name}``); any other path is ``other``
            (and any method not in :data:`METHODS`).
    """

    def __init__(self, app: ASGIApp, *, stats: HttpStats, routes: frozenset[str]) -> None:
        self.app, self.stats, self.routes = app, stats, routes
        # a route with parameters (/dashboard/static/{name}) is reported as its pattern, matched
        # as the router matches it
        self._patterns = [(compile_path(r)[0], r) for r in sorted(routes) if "{" in r]

    def route_of(self, path: str) -> str:
        """The label of ``path`` (less the mount prefix): the route it matches, else ``other``.

        Example:
            >>> metrics = HttpMetrics(None, stats=HttpStats(), routes=frozenset({"/health", "/f/{name}"}))
            >>> metrics.route_of("/health"), metrics.route_of("/f/a.js"), metrics.route_of("/f/a/b")
            ('/health', '/f/{name}', 'other')
        """
        if path in self.routes:
            return path
        return next((route for regex, route in self._patterns if regex.match(path)), "other")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self.route_of(route_path(scope))  # less the prefix the app is mounted at
        status = 500  # what the server answers if the app fails before responding

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, watch)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.stats.observe(method, route, status, time.perf_counter() - started)


def ledger_metrics(
    report: Callable[[], Report], budgets: Callable[[], Sequence[Mapping[str, Any]]]
) -> list[Family]:
    """Today's ledger figures as metric families (``tokenbudget_store_up`` 0 when the store is down
    or refuses the ledger).

    Args:
        report: Builds today's report (``build_report(ledger, last_days=1, percentiles=False)``:
            no percentile is a metric, so no scrape reads the day's per-call cost samples).
        budgets: Today's budget rows (:func:`~tokenbudget_core.budget_status.budget_rows`).
    """
    try:
        r, rows = report(), budgets()
    except (BudgetUnavailableError, StoreRefusedError):  # down, or up but refusing the ledger
        return [("tokenbudget_store_up", "gauge", "1 when the ledger's store answers.", [("", {}, 0)])]
    t = r.totals
    day = r.per_day[-1] if r.per_day else None
    per_user = day.cost_per_active_user_usd if day is not None else None

    def gauge(name: str, help_text: str, samples: list[Sample]) -> Family:
        return (name, "gauge", help_text, samples)

    def spend_by(dimension: Dimension, *, unpriced: bool = False) -> list[Sample]:
        """Spend (or, ``unpriced``, the calls of models without a known price that it leaves out)
        per row of ``dimension``, the rest as one ``(other)`` series."""
        b = r.breakdown(dimension)
        samples: list[Sample] = [
            ("", {dimension: row.key or ""}, row.unpriced_requests if unpriced else row.cost_usd)
            for row in b.rows
        ]
        if b.omitted:
            other, keys = OTHER_LABEL, {row.key for row in b.rows}
            while other in keys:  # an id spelled "(other)" keeps its own series
                other += "*"
            rest = b.omitted_unpriced_requests if unpriced else b.omitted_cost_usd
            samples.append(("", {dimension: other}, rest))
        return samples

    families = [
        gauge("tokenbudget_store_up", "1 when the ledger's store answers.", [("", {}, 1)]),
        gauge("tokenbudget_spend_usd_today", "Spend today, USD.", [("", {}, t.cost_usd)]),
        gauge("tokenbudget_llm_requests_today", "LLM calls recorded today.", [("", {}, t.requests)]),
        gauge("tokenbudget_cache_hits_today", "Calls answered from a cache today.", [("", {}, t.cache_hits)]),
        gauge(
            "tokenbudget_cache_saved_usd_today", "What cache hits saved today, USD.", [("", {}, t.saved_usd)]
        ),
        gauge(
            "tokenbudget_active_users_today", "Distinct users with calls today.", [("", {}, t.active_users)]
        ),
        gauge("tokenbudget_spend_usd_today_by_feature", "Spend today by feature, USD.", spend_by("feature")),
        gauge("tokenbudget_spend_usd_today_by_model", "Spend today by model, USD.", spend_by("model")),
        gauge(
            "tokenbudget_unpriced_requests_today",
            "LLM calls today of models without a known price: the spend series leave their cost out.",
            [("", {}, t.unpriced_requests)],
        ),
        gauge(
            "tokenbudget_unpriced_requests_today_by_model",
            "LLM calls today of models without a known price, by model (the model's spend leaves them out).",
            spend_by("model", unpriced=True),
        ),
        gauge(
            "tokenbudget_budget_used_share",
            "Spent + reserved / limit of each budget today.",
            [
                ("", {"budget": row["budget"], "feature": row["feature"] or ""}, round(row["share"], 6))
                for row in rows
            ],
        ),
        gauge(
            "tokenbudget_budget_headroom",
            "What is left of each budget today (USD or tokens, see unit).",
            [
                (
                    "",
                    {"budget": row["budget"], "feature": row["feature"] or "", "unit": row["unit"]},
                    row["headroom"],
                )
                for row in rows
            ],
        ),
    ]
    if per_user is not None:
        families.insert(
            6,
            gauge(
                "tokenbudget_cost_per_active_user_usd_today",
                "Today's spend / today's active users, USD.",
                [("", {}, per_user)],
            ),
        )
    return families
