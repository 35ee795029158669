"""Review s30 (server #5): /openapi.json listed only 200/201 and FastAPI's own 422
``{detail}`` shape, while the service answers 401, 413, 421, 422, 429 and 503 with one error
body ``{error, message, field, fix, detail, ...}``. Each route now declares the error answers it
gives, with that shape, and the answers match what the service sends."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.server import create_app

pytestmark = pytest.mark.usefixtures("isolated")

ERROR_REF = "#/components/schemas/ErrorBody"


@pytest.fixture
def schema() -> dict[str, Any]:
    with TestClient(create_app("memory://")) as c:
        answer: dict[str, Any] = c.get("/openapi.json").json()
    return answer


def _responses(schema: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    operation: dict[str, Any] = schema["paths"][path][method]
    return operation["responses"]  # type: ignore[no-any-return]


def _ref(response: dict[str, Any]) -> str:
    return response["content"]["application/json"]["schema"]["$ref"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("method", "path", "statuses"),
    [
        ("post", "/budget/reserve", {"201", "401", "413", "421", "422", "429", "503"}),
        ("post", "/budget/check", {"200", "401", "413", "421", "422", "503"}),
        ("post", "/budget/commit", {"200", "401", "413", "421", "422", "503"}),
        ("post", "/usage/record", {"200", "401", "413", "421", "422", "503"}),
        ("post", "/tokens/count", {"200", "401", "413", "421", "422", "503"}),
        ("get", "/usage/report", {"200", "401", "421", "422", "503"}),
        ("get", "/budgets", {"200", "401", "421", "422", "503"}),
        ("get", "/health", {"200", "421", "503"}),
        ("get", "/metrics", {"200", "401", "421"}),
    ],
)
def test_routes_declare_their_error_answers(
    schema: dict[str, Any], method: str, path: str, statuses: set[str]
) -> None:
    responses = _responses(schema, method, path)
    assert set(responses) == statuses
    for status in statuses - {"200", "201"}:
        assert _ref(responses[status]) == ERROR_REF


def test_the_error_shape_is_the_one_the_service_sends(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    assert "HTTPValidationError" not in components  # FastAPI's {detail}: never answered
    declared = set(components["ErrorBody"]["properties"])
    assert {"error", "message", "field", "fix", "detail"} <= declared
    assert set(components["ErrorBody"]["required"]) == {"error", "message"}

    policy = BudgetPolicy(daily_usd="0.000001")
    guarded = TestClient(
        create_app(Ledger("memory://", policy=policy, alerts=[]), token="t", max_body_bytes=120)
    )
    auth = {"Authorization": "Bearer t"}
    call = {"model": "gpt-4o", "input_tokens": 10, "max_output_tokens": 10}
    with guarded as c:
        answers = {
            401: c.post("/budget/reserve", json=call),
            413: c.post("/budget/reserve", json=call | {"feature": "x" * 200}, headers=auth),
            422: c.post("/budget/reserve", json=call | {"input_tokenz": 1}, headers=auth),
            429: c.post("/budget/reserve", json=call, headers=auth),
        }
    for status, answer in answers.items():
        assert answer.status_code == status
        assert set(answer.json()) <= declared, (status, answer.json())
