"""A store that is up but refuses the ledger (here: a real Redis given credentials it does not
take) is the server's configuration, not the client's request: every endpoint that needs the
store answers ``503`` ``store_refused`` with the store and what to check, never a ``400``;
``/health`` answers it as not healthy, ``/metrics`` keeps answering ``200`` with
``tokenbudget_store_up 0``, and usage sent to be recorded is spooled, not refused."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from fastapi.testclient import TestClient

from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.server import create_app

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("isolated")]

CALL = {"model": "gpt-4o", "input_tokens": 100, "max_output_tokens": 50, "feature": "support"}


def _with_wrong_credentials(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"tb-no-such-user:wrong-password@{host}:{parts.port or 6379}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@pytest.fixture
def client(redis_url: str) -> Iterator[TestClient]:
    app = create_app(_with_wrong_credentials(redis_url), policy=BudgetPolicy(daily_usd=Decimal("1")))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c
    app.state.ledger.close()


def _assert_store_refused(body: dict[str, Any]) -> None:
    assert body["error"] == "store_refused", body
    assert "***" in body["store"]  # the store, its password redacted
    assert "wrong-password" not in str(body)
    assert "password" in body["fix"]
    assert "ACL" in body["fix"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/budget/reserve", CALL),
        ("POST", "/budget/check", CALL),
        ("GET", "/usage/report", None),
        ("GET", "/budgets", None),
        ("GET", "/dashboard/data", None),
    ],
)
def test_endpoints_needing_the_store_answer_503_store_refused(
    client: TestClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    response = client.request(method, path, json=body)
    assert response.status_code == 503, response.text
    _assert_store_refused(response.json())


def test_health_answers_a_refusing_store_as_down(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["status"] == "down"
    _assert_store_refused(body)


def test_metrics_still_answer_with_the_store_marked_down(client: TestClient) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    lines = response.text.splitlines()
    assert "tokenbudget_store_up 0" in lines, response.text
    assert not any(line.startswith("tokenbudget_spend_usd_today") for line in lines)


def test_usage_to_record_is_spooled_not_refused(client: TestClient) -> None:
    response = client.post("/usage/record", json={"model": "gpt-4o", "usage": {"input_tokens": 10}})
    assert response.status_code == 200, response.text
    assert response.json()["spooled"] is True


def test_a_commit_is_spooled_and_a_release_answers_503_store_refused(client: TestClient) -> None:
    with TestClient(create_app("memory://")) as elsewhere:  # a reservation as a client holds one
        reservation = elsewhere.post("/budget/reserve", json=CALL).json()
    committed = client.post(
        "/budget/commit",
        json={"reservation": reservation, "usage": {"input_tokens": 90, "output_tokens": 40}},
    )
    assert committed.status_code == 200, committed.text
    assert committed.json()["spooled"] is True
    released = client.post("/budget/release", json={"reservation": reservation | {"request_id": "other"}})
    assert released.status_code == 503, released.text
    _assert_store_refused(released.json())
