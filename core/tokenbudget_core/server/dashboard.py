"""The dashboard: what its page shows, computed from the ledger, and the page's static files.

``GET /dashboard`` serves ``static/dashboard.html`` (with ``dashboard.js`` and ``dashboard.css``:
hand-written SVG charts, no CDN, no external font). The page fetches :func:`dashboard_data`
from ``GET /dashboard/data`` and draws (its URLs are relative to the page, so it works with the
app mounted under a prefix too):

* cost per active user per day over the report's days (the headline metric of
  :mod:`~tokenbudget_core.reports`);
* spend by feature and by model, and the top users;
* budget headroom (today, from :func:`~tokenbudget_core.budget_status.budget_rows`);
* cache hit rate and savings;
* the month-end projection (none, with the reason, before the month's first full day: see
  :mod:`~tokenbudget_core.reports`);
* the routing mix: the share of calls each model served (routing tiers map to models), and
  what routing saved against the premium tier (the report's ``routing_saved_usd``).

The *cache hit rate* is the report's (:attr:`~tokenbudget_core.reports.Totals.hit_rate`: cache
hits per call of the users' own, tokenbudget's own calls such as a semantic cache's embeddings
left out, ``None`` without any), here to 6 decimals; the page's "N of M calls answered from
cache" counts those same calls. Defined here, once: a model's *routing share* = its calls / all
calls.

Features, models and users past the :data:`TOP` biggest are summed in one last row with
``key`` ``null`` and ``omitted`` = how many they are (``0`` on every other row), so each list
adds up to the totals (its shares to 1).
"""

from __future__ import annotations

from decimal import Decimal
from importlib import resources
from typing import TYPE_CHECKING, Any

from tokenbudget_core.budget_status import budget_rows, features_of
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.money import decimal_text, jsonable
from tokenbudget_core.reports import Breakdown, Totals, build_report

if TYPE_CHECKING:
    from tokenbudget_core.ledger import Ledger

__all__ = ["STATIC_FILES", "dashboard_data", "static_file"]

STATIC_FILES = {
    "dashboard.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
"""The page's files and their content types."""
TOP = 10
"""Features, models and users shown."""


def static_file(name: str) -> tuple[bytes, str]:
    """A static file of the page and its content type.

    Raises:
        InvalidInputError: ``name`` is not one of :data:`STATIC_FILES`.
    """
    if name not in STATIC_FILES:
        raise InvalidInputError("name", f"no static file {name!r}", fix=f"one of {sorted(STATIC_FILES)}")
    return resources.files(__package__).joinpath("static", name).read_bytes(), STATIC_FILES[name]


def _ratio(part: int, whole: int) -> str | None:
    return None if not whole else str((Decimal(part) / whole).quantize(Decimal("1e-6")))


def _rows(b: Breakdown, t: Totals) -> list[dict[str, Any]]:
    rows = [
        {
            "key": r.key,
            "omitted": 0,
            "requests": r.requests,
            "input_tokens": r.input_tokens,
            "cost_usd": decimal_text(r.cost_usd),
            "unpriced_requests": r.unpriced_requests,
        }
        for r in b.rows
    ]
    if b.omitted:  # the rest, as the totals less the rows shown: every call is in one row of each list
        rows.append(
            {
                "key": None,
                "omitted": b.omitted,
                "requests": t.requests - sum(r.requests for r in b.rows),
                "input_tokens": t.input_tokens - sum(r.input_tokens for r in b.rows),
                "cost_usd": decimal_text(b.omitted_cost_usd),
                "unpriced_requests": b.omitted_unpriced_requests,
            }
        )
    return rows


def _routing_mix(models: Breakdown, t: Totals) -> list[dict[str, Any]]:
    mix = [
        {
            "model": r.key,
            "omitted": 0,
            "requests": r.requests,
            "share": _ratio(r.requests, t.requests),
            "routed_requests": r.routed_requests,
            "routing_saved_usd": decimal_text(r.routing_saved_usd),
        }
        for r in models.rows
    ]
    if models.omitted:
        requests = t.requests - sum(r.requests for r in models.rows)
        mix.append(
            {
                "model": None,
                "omitted": models.omitted,
                "requests": requests,
                "share": _ratio(requests, t.requests),
                "routed_requests": t.routed_requests - sum(r.routed_requests for r in models.rows),
                "routing_saved_usd": decimal_text(
                    t.routing_saved_usd - sum((r.routing_saved_usd for r in models.rows), Decimal(0))
                ),
            }
        )
    return mix


def dashboard_data(ledger: Ledger, *, last_days: int = 14) -> dict[str, Any]:
    """Everything the dashboard shows, as JSON-safe data (money and ratios as decimal strings).

    Args:
        ledger: The ledger to read.
        last_days: The days shown, ending today.

    Raises:
        InvalidInputError: ``last_days`` is not a positive integer.
        BudgetUnavailableError: The store cannot be reached.
    """
    report = build_report(ledger, last_days=last_days, top=TOP)
    t = report.totals
    budgets, steps = budget_rows(ledger, features_of(ledger.policy), None)
    models = report.breakdown("model")
    return {
        "days": list(report.days),
        "timezone": report.timezone,
        "generated_at": report.generated_at,
        "totals": {
            "requests": t.requests,
            "cost_usd": decimal_text(t.cost_usd),
            "active_users": t.active_users,
            "cache_hits": t.cache_hits,
            "overhead_requests": t.overhead_requests,
            # the report's hit rate (Totals.hit_rate): over the users' own calls only
            "own_requests": t.requests - t.overhead_requests,
            "own_cache_hits": t.cache_hits - t.overhead_cache_hits,
            "cache_hit_rate": _ratio(t.cache_hits - t.overhead_cache_hits, t.requests - t.overhead_requests),
            "saved_usd": decimal_text(t.saved_usd),
            "unpriced_requests": t.unpriced_requests,
            "estimated_requests": t.estimated_requests,
            "routed_requests": t.routed_requests,
            "routing_saved_usd": decimal_text(t.routing_saved_usd),
        },
        "per_day": [
            {
                "day": d.day,
                "requests": d.requests,
                "cost_usd": decimal_text(d.cost_usd),
                "active_users": d.active_users,
                "cost_per_active_user_usd": None
                if d.cost_per_active_user_usd is None
                else decimal_text(d.cost_per_active_user_usd),
                "unpriced_requests": d.unpriced_requests,
            }
            for d in report.per_day
        ],
        "by_feature": _rows(report.breakdown("feature"), t),
        "by_model": _rows(models, t),
        "top_users": _rows(report.breakdown("user"), t),
        "routing_mix": _routing_mix(models, t),
        "budgets": [jsonable(row) | {"share": round(row["share"], 6)} for row in budgets],
        "steps": steps,
        "projection": {
            "month": report.projection.month,
            "month_to_date_usd": decimal_text(report.projection.month_to_date_usd),
            "projected_usd": None
            if report.projection.projected_usd is None
            else decimal_text(report.projection.projected_usd),
            "available_from": report.projection.available_from,
            "reason": report.projection.reason,
            "unpriced_requests": report.projection.unpriced_requests,
        },
    }
