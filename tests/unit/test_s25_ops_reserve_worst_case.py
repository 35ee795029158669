"""``POST /budget/reserve`` and ``/budget/check`` take the two worst-case inputs ``Ledger.reserve``
and ``Ledger.check`` take: ``cache_writes`` (a prompt-cache write costs more than plain input) and
``choices`` (OpenAI's ``n``), so a call is refused over HTTP exactly as it is in Python, instead of
being granted at a worst case its commit then overshoots. ``/budget/check`` takes ``request_id``
as ``Ledger.check`` does: validated, nothing held under it."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget
from tokenbudget_core.errors import BudgetExceededError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.server import create_app

pytestmark = pytest.mark.usefixtures("isolated")

CACHED = {
    "model": "claude-sonnet-4-5",
    "input_tokens": 20_000,
    "max_output_tokens": 1_000,
    "feature": "chat",
    "user": "u1",
}  # $0.075 as plain input; $0.135 with every input token written to a 1h cache
CHOICES = {
    "model": "gpt-4o",
    "input_tokens": 100,
    "max_output_tokens": 100,
    "feature": "capped",
    "user": "u2",
}


def _policy() -> BudgetPolicy:
    return BudgetPolicy(
        features={
            "chat": FeatureBudget(user_daily_usd=Decimal("0.12")),
            "capped": FeatureBudget(max_output_tokens_per_call=100),
        }
    )


@pytest.fixture
def ledger() -> Iterator[Ledger]:
    led = Ledger("memory://", policy=_policy(), alerts=[])
    yield led
    led.close()


@pytest.fixture
def client(ledger: Ledger) -> Iterator[TestClient]:
    with TestClient(create_app(ledger)) as c:
        yield c


def _python_worst_case(**call: Any) -> Decimal | None:
    led = Ledger("memory://", alerts=[])
    try:
        return led.reserve(**call).reserved_usd
    finally:
        led.close()


@pytest.mark.parametrize("path", ["/budget/reserve", "/budget/check"])
def test_a_1h_cache_write_is_refused_as_in_python(client: TestClient, path: str) -> None:
    with pytest.raises(BudgetExceededError):  # the Python ledger refuses it
        Ledger("memory://", policy=_policy(), alerts=[]).reserve(**CACHED, cache_writes="1h")
    r = client.post(path, json=CACHED | {"cache_writes": "1h"})
    body = r.json()
    if path == "/budget/reserve":
        assert r.status_code == 429, body
    else:
        assert r.status_code == 200, body
        assert body["allowed"] is False
    assert body["budget"] == "user_daily_usd"
    assert Decimal(body["requested"]) == _python_worst_case(**CACHED, cache_writes="1h") == Decimal("0.135")


def test_a_5m_cache_write_and_choices_reserve_the_python_worst_case(client: TestClient) -> None:
    r = client.post("/budget/reserve", json=CACHED | {"cache_writes": "5m"})
    assert r.status_code == 201, r.json()
    assert Decimal(r.json()["reserved_usd"]) == _python_worst_case(**CACHED, cache_writes="5m")

    r = client.post("/budget/reserve", json=CHOICES | {"choices": 4})  # 100 output tokens per choice
    assert r.status_code == 201, r.json()
    assert Decimal(r.json()["reserved_usd"]) == _python_worst_case(**CHOICES, choices=4)
    assert Decimal(r.json()["reserved_usd"]) > _python_worst_case(**CHOICES)

    checked = client.post("/budget/check", json=CHOICES | {"choices": 4}).json()
    assert checked["allowed"] is True
    assert Decimal(checked["reserved_usd"]) == _python_worst_case(**CHOICES, choices=4)


@pytest.mark.parametrize("path", ["/budget/reserve", "/budget/check"])
@pytest.mark.parametrize(
    ("field", "value"),
    [("choices", 0), ("choices", 129), ("choices", True), ("choices", 2.0), ("choices", "2"),
     ("cache_writes", "2h"), ("cache_writes", 5)],
)  # fmt: skip
def test_bad_values_are_422_naming_the_field(
    client: TestClient, path: str, field: str, value: object
) -> None:
    r = client.post(path, json=CHOICES | {field: value})
    assert r.status_code == 422, r.json()
    body = r.json()
    assert body["error"] == "validation_error"
    assert f"body.{field}" in body["message"], body


def test_check_validates_request_id_and_holds_nothing(client: TestClient, ledger: Ledger) -> None:
    r = client.post("/budget/check", json=CACHED | {"request_id": ""})
    assert r.status_code == 422, r.json()
    assert "body.request_id" in r.json()["message"]
    r = client.post("/budget/check", json=CACHED | {"request_id": "r-1"})
    assert r.status_code == 200, r.json()
    assert r.json()["allowed"] is True
    reserved = client.post("/budget/reserve", json=CACHED | {"request_id": "r-1"})
    assert reserved.status_code == 201, reserved.json()  # the check held nothing under r-1
