"""Over HTTP, as in Python, a commit names the model that actually answered (``model``) and what to
do with a model the registry does not know (``unknown_model``), and ``/usage/record`` takes
``unknown_model`` too.

Before, a routed call reserved on its premium model and answered by the cheap tier was charged
at the premium price with no routing saving, and usage of an unknown model (a new snapshot, a
fine-tune) could not be recorded over HTTP at all, although the call had happened.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report
from tokenbudget_core.server import create_app
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")

AT = datetime(2026, 11, 18, 12, tzinfo=UTC).timestamp()
DAY = "2026-11-18"
USAGE = {"input_tokens": 2_000, "output_tokens": 500}
UNKNOWN = "acme-llm-7b"


@pytest.fixture
def ledger() -> Ledger:
    return Ledger("memory://", policy=BudgetPolicy(daily_usd=Decimal("1")), clock=lambda: AT)


@pytest.fixture
def client(ledger: Ledger) -> Iterator[TestClient]:
    with TestClient(create_app(ledger)) as c:
        yield c


def _reserve(client: TestClient, model: str = "gpt-4o") -> dict[str, Any]:
    body = {"model": model, "input_tokens": 2_000, "max_output_tokens": 1_000}
    response = client.post("/budget/reserve", json=body)
    assert response.status_code == 201, response.text
    reservation: dict[str, Any] = response.json()
    return reservation


def test_a_routed_call_is_charged_on_the_model_that_answered_as_in_python(
    client: TestClient, ledger: Ledger
) -> None:
    """The reviewer's repro: reserved on gpt-4o (the premium tier), answered by gpt-4o-mini."""
    body = {
        "reservation": _reserve(client),
        "usage": USAGE,
        "model": "gpt-4o-mini",
        "premium_model": "gpt-4o",
    }
    response = client.post("/budget/commit", json=body)
    assert response.status_code == 200, response.text
    charge = response.json()

    python = Ledger("memory://", clock=lambda: AT)
    expected = python.commit(
        python.reserve(model="gpt-4o", input_tokens=2_000, max_output_tokens=1_000),
        Usage(**USAGE),
        model="gpt-4o-mini",
        premium_model="gpt-4o",
    )
    assert expected.cost_usd is not None
    assert expected.routing_saved_usd is not None
    assert Decimal(charge["cost_usd"]) == expected.cost_usd
    assert Decimal(charge["routing_saved_usd"]) == expected.routing_saved_usd
    assert expected.cost_usd == Decimal("0.0006")  # gpt-4o-mini's price, not gpt-4o's $0.01
    assert expected.routing_saved_usd == Decimal("0.0094")

    report = build_report(ledger, day=DAY, by=("model",))
    assert [row.key for row in report.breakdown("model").rows] == ["gpt-4o-mini"]
    assert report.totals.routed_requests == 1
    assert report.totals.routing_saved_usd == Decimal("0.0094")
    # the reservation was settled by the commit: the whole hold is back but the charge
    assert ledger.state().headroom["daily_usd"] == Decimal(1) - expected.cost_usd


def test_a_commit_on_an_unknown_model_is_kept_unpriced_when_asked(client: TestClient, ledger: Ledger) -> None:
    body = {"reservation": _reserve(client), "usage": USAGE, "model": UNKNOWN, "unknown_model": "unpriced"}
    response = client.post("/budget/commit", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["cost_usd"] is None
    assert response.json()["applied"] is True
    totals = build_report(ledger, day=DAY).totals
    assert (totals.requests, totals.unpriced_requests, totals.cost_usd) == (1, 1, Decimal(0))
    assert totals.input_tokens == USAGE["input_tokens"]


def test_a_commit_on_an_unknown_model_is_refused_by_default_and_holds_nothing(
    client: TestClient, ledger: Ledger
) -> None:
    before = ledger.state().headroom["daily_usd"]
    body = {"reservation": _reserve(client), "usage": USAGE, "model": UNKNOWN}
    response = client.post("/budget/commit", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "unknown_model"
    assert response.json()["field"] == "model"
    assert ledger.state().headroom["daily_usd"] == before  # released, as Ledger.commit does


def test_usage_of_an_unknown_model_can_be_recorded_unpriced(client: TestClient, ledger: Ledger) -> None:
    """The reviewer's repro: the call happened; its usage is kept, counted unpriced (never $0)."""
    refused = client.post("/usage/record", json={"model": UNKNOWN, "usage": USAGE})
    assert refused.status_code == 422
    assert refused.json()["error"] == "unknown_model"
    body = {"model": UNKNOWN, "usage": USAGE, "unknown_model": "unpriced", "request_id": "r-1"}
    response = client.post("/usage/record", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["cost_usd"] is None
    assert response.json()["applied"] is True
    totals = build_report(ledger, day=DAY).totals
    assert (totals.requests, totals.unpriced_requests) == (1, 1)
    assert totals.output_tokens == USAGE["output_tokens"]


@pytest.mark.parametrize("endpoint", ["/budget/commit", "/usage/record"])
def test_unknown_model_takes_only_the_cores_values(client: TestClient, endpoint: str) -> None:
    body: dict[str, Any] = {"usage": USAGE, "unknown_model": "ignore"}
    body |= {"reservation": _reserve(client)} if endpoint == "/budget/commit" else {"model": "gpt-4o"}
    response = client.post(endpoint, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "body.unknown_model"


def test_the_openapi_schema_names_the_new_fields(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert {"model", "unknown_model"} <= set(schemas["CommitBody"]["properties"])
    assert "unknown_model" in schemas["RecordBody"]["properties"]
