"""Where today's budgets stand: one row per budget with its limit, use, headroom and ladder step.

:func:`budget_rows` is what ``tokenbudget budgets`` prints and what the HTTP service's
``GET /budgets`` and the dashboard's headroom chart show, computed once here from
:meth:`~tokenbudget_core.ledger.Ledger.state`.

Budgets that do not depend on the feature (:data:`GLOBAL_BUDGETS`) are listed once; per-user
budgets only when a user is given, or asked for the calls that name none (``no_user``: one
anonymous user in every per-user budget). :func:`features_of` is the features all of them show.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .attribution import Attribution, in_force
from .errors import BudgetUnavailableError, InvalidInputError

if TYPE_CHECKING:
    from .budgets import BudgetPolicy
    from .ledger import Ledger

__all__ = ["GLOBAL_BUDGETS", "budget_rows", "features_of"]

GLOBAL_BUDGETS = ("daily_usd", "user_daily_usd (all features)", "user_daily_tokens (all features)")
"""Budgets that do not depend on the feature: listed once."""

_NO_BLOCK = Attribution()


def features_of(policy: BudgetPolicy) -> list[str | None]:
    """The features whose budgets are shown: the configured ones, sorted, then ``None`` (calls
    that name no feature) whenever ``[default_feature]`` sets any limit, or no feature is configured.

    The calls without a feature are limited by ``default_feature`` however many features are
    configured: a budget of theirs that refuses every such call must be shown too.
    """
    from .budgets import BudgetPolicy  # (at run time: budgets imports nothing of this module)

    if not isinstance(policy, BudgetPolicy):
        raise InvalidInputError("policy", "must be a BudgetPolicy", value=type(policy).__name__)
    default = policy.default_feature
    limited = any(getattr(default, f.name) is not None for f in dataclasses.fields(default))
    configured: list[str | None] = [*sorted(policy.features)]
    return [*configured, None] if limited or not configured else configured


def budget_rows(
    ledger: Ledger, features: Sequence[str | None], user: str | None, *, no_user: bool = False
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One row per budget, and each feature's ladder step.

    The step is that of the budgets shown: without a user, of the feature's and the global
    budgets (a user's own budgets may put that user's calls on a later step).

    Args:
        ledger: The ledger whose policy and store are read.
        features: The features to show (``None``: calls made without a feature).
        user: Also show this user's budgets (``None``: per-user budgets are left out).
        no_user: Show the per-user budgets of calls that name no user (they count as one
            anonymous user in every per-user budget; their rows' ``user`` is ``None``).

    Returns:
        ``(rows, steps)``: each row has ``feature``, ``user``, ``budget``, ``unit`` (``usd`` or
        ``tokens``), ``limit``, ``used`` (spent + reserved), ``headroom``, ``share`` (used / limit)
        and ``step``; money as ``Decimal``. Each step is ``{"feature", "step"}``.

    The rows are those of ``features`` and ``user`` as given, whatever ``attribute()`` block
    the caller is in (a block's ids win over a ledger call's arguments: not here).

    Raises:
        InvalidInputError: ``ledger`` is not a Ledger, ``features`` not a list of feature ids
            (a single id: ``[id]``), ``user`` not an id, or ``user`` and ``no_user`` both given.
        BudgetUnavailableError: The store cannot be reached, whether the ledger fails closed or
            open: a ledger failing open lets calls through unchecked, but there are no figures to
            show, and an empty list would read as "no budget configured, nothing used".
    """
    from .ledger import Ledger  # (at run time: the ledger module imports this one's users)

    if not isinstance(ledger, Ledger):
        raise InvalidInputError("ledger", "must be a tokenbudget Ledger", value=type(ledger).__name__)
    if not isinstance(features, (list, tuple)):
        raise InvalidInputError(
            "features",
            "must be a list of feature ids (None: calls naming no feature)",
            value=features,
            fix=f"pass [{features!r}] for one feature" if isinstance(features, str) else "pass a list",
        )
    for i, f in enumerate(features):
        if f is not None and (type(f) is not str or not f):
            raise InvalidInputError(f"features[{i}]", "must be a non-empty string or None", value=f)
    if user is not None and (type(user) is not str or not user):
        raise InvalidInputError("user", "must be a non-empty string or None", value=user)
    if no_user and user is not None:
        raise InvalidInputError(
            "no_user",
            f"cannot be combined with user {user!r}: one shows that user's budgets, the other "
            "those of calls naming no user",
            fix="pass one of them",
        )
    policy = ledger.policy
    rows: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    per_user = user is not None or no_user
    for f in features:
        with in_force(_NO_BLOCK):  # the ids asked for, not an enclosing block's
            state = ledger.state(feature=f, user=user)
        if state.unchecked:  # a fail-open ledger's empty answer for a store it could not read
            raise _unreadable(ledger)
        shown = {n: sh for n, sh in state.shares.items() if per_user or not n.startswith("user_")}
        steps.append({"feature": f, "step": policy.ladder.step(max(shown.values(), default=0.0))})
        limits = policy.daily_limits(f)
        for name, share in shown.items():
            is_global = name in GLOBAL_BUDGETS
            if is_global and any(row["budget"] == name for row in rows):
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


def _unreadable(ledger: Ledger) -> BudgetUnavailableError:
    """The outage a fail-open ledger's ``unchecked`` state stands for, with the store's own
    reason when a ping still meets it (the state keeps none)."""
    from .stores.base import redact_url

    store = redact_url(ledger.store.url)
    try:
        ledger.store.ping()
    except BudgetUnavailableError as e:
        return e
    except OSError as e:  # a backend that leaked a raw connection error
        return BudgetUnavailableError(store, str(e))
    return BudgetUnavailableError(store, "it failed while today's budgets were read; retry")
