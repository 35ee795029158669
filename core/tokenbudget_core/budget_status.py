"""Where today's budgets stand: one row per budget with its limit, use, headroom and ladder step.

:func:`budget_rows` is what ``tokenbudget budgets`` prints and what the HTTP service's
``GET /budgets`` and the dashboard's headroom chart show, computed once here from
:meth:`~tokenbudget_core.ledger.Ledger.state`.

Budgets that do not depend on the feature (:data:`GLOBAL_BUDGETS`) are listed once; per-user
budgets only when a user is given. :func:`features_of` is the features all of them show.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .budgets import BudgetPolicy
    from .ledger import Ledger

__all__ = ["GLOBAL_BUDGETS", "budget_rows", "features_of"]

GLOBAL_BUDGETS = ("daily_usd", "user_daily_usd (all features)", "user_daily_tokens (all features)")
"""Budgets that do not depend on the feature: listed once."""


def features_of(policy: BudgetPolicy) -> list[str | None]:
    """The features whose budgets are shown: the configured ones, sorted, then ``None`` (calls
    that name no feature) whenever ``[default_feature]`` sets any limit, or no feature is configured.

    The calls without a feature are limited by ``default_feature`` however many features are
    configured: a budget of theirs that refuses every such call must be shown too.
    """
    default = policy.default_feature
    limited = any(getattr(default, f.name) is not None for f in dataclasses.fields(default))
    configured: list[str | None] = [*sorted(policy.features)]
    return [*configured, None] if limited or not configured else configured


def budget_rows(
    ledger: Ledger, features: Sequence[str | None], user: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One row per budget, and each feature's ladder step.

    Args:
        ledger: The ledger whose policy and store are read.
        features: The features to show (``None``: calls made without a feature).
        user: Also show this user's budgets (``None``: per-user budgets are left out).

    Returns:
        ``(rows, steps)``: each row has ``feature``, ``user``, ``budget``, ``unit`` (``usd`` or
        ``tokens``), ``limit``, ``used`` (spent + reserved), ``headroom``, ``share`` (used / limit)
        and ``step``; money as ``Decimal``. Each step is ``{"feature", "step"}``.

    Raises:
        BudgetUnavailableError: The store cannot be reached.
    """
    policy = ledger.policy
    rows: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    for f in features:
        state = ledger.state(feature=f, user=user)
        steps.append({"feature": f, "step": state.step})
        limits = policy.daily_limits(f)
        for name, share in state.shares.items():
            is_global = name in GLOBAL_BUDGETS
            if (name.startswith("user_") and user is None) or (
                is_global and any(row["budget"] == name for row in rows)
            ):
                continue
            limit = limits.get(name)
            used = state.used.get(name)  # spent + reserved, exact (a limit of 0 has its use too)
            rows.append(
                {
                    "feature": None if is_global else f,
                    "user": user if name.startswith("user_") else None,
                    "budget": name,
                    "unit": "usd" if isinstance(limit, Decimal) else "tokens",
                    "limit": limit,
                    "used": used,
                    "headroom": state.headroom[name],
                    "share": share,
                    "step": policy.ladder.step(share),
                }
            )
    return rows, steps
