"""Fuzz the HTTP service from its own OpenAPI schema (schemathesis): no request may get a 5xx.

Schemathesis generates valid and invalid requests for every operation in ``/openapi.json``
(bodies, query strings, wrong types, out-of-range figures) and sends them to the app in
process. Bad input must come back as a 4xx that names the field, never a server error. The
ledger has a policy, so refusals (429) are exercised too.
"""

from __future__ import annotations

import tempfile
from decimal import Decimal
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.server import create_app

pytestmark = pytest.mark.integration

_SPOOL = Path(tempfile.gettempdir()) / "tokenbudget-fuzz-spool.jsonl"  # never written: the store is in memory

_ledger = Ledger(
    "memory://",
    policy=BudgetPolicy(
        daily_usd=Decimal("5"),
        features={
            "support": FeatureBudget(user_daily_usd=Decimal("0.01"), max_input_tokens_per_call=100_000)
        },
    ),
    spool_path=_SPOOL,
)
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(_ledger, max_body_bytes=65_536))


@schema.parametrize()
@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_request_gets_a_server_error(case: schemathesis.Case) -> None:
    response = case.call()
    assert response.status_code < 500, (
        f"{case.method} {case.path} -> {response.status_code}: {response.text[:500]}"
    )
    if response.status_code == 422:
        body = response.json()
        assert body.get("field"), f"a 422 must name the field: {body}"
