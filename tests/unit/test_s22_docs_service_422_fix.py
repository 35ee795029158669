"""Every 422 the service answers carries a ``fix``, as docs/service.md's error table says.

Review s22-docs D8: an unknown field, a JSON array body, a naive ``at``, ``?by=nope`` and
``day`` + ``last_days`` together answered ``"fix": null``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient

from tokenbudget_core.server import create_app

USAGE = {"input_tokens": 10, "output_tokens": 1}


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app("memory://"))


def _fix(response: Any) -> str:
    assert response.status_code == 422, response.text
    body = response.json()
    assert isinstance(body["fix"], str), body
    assert body["fix"].strip(), body
    assert body["field"], body
    return str(body["fix"])


def test_an_unknown_field_says_to_remove_it(client: TestClient) -> None:
    r = client.post("/tokens/count", json={"model": "gpt-4o", "text": "x", "bogus": 1})
    assert "'bogus'" in _fix(r)


def test_an_array_body_says_to_send_an_object(client: TestClient) -> None:
    r = client.post("/tokens/count", content=b"[1, 2]", headers={"Content-Type": "application/json"})
    assert "object" in _fix(r)


def test_a_naive_time_says_to_give_its_zone(client: TestClient) -> None:
    naive = datetime.now().replace(tzinfo=None).isoformat()
    r = client.post("/usage/record", json={"model": "gpt-4o", "usage": USAGE, "at": naive})
    assert "zone" in _fix(r)


def test_a_bad_choice_lists_the_choices(client: TestClient) -> None:
    assert "'feature'" in _fix(client.get("/usage/report?by=nope"))


def test_day_and_last_days_together_say_which_to_send(client: TestClient) -> None:
    r = client.get("/usage/report?day=2026-11-24&last_days=3")
    fix = _fix(r)
    assert "day=" in fix
    assert "last_days=" in fix


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/usage/record", {"model": "gpt-4o"}),  # a field missing
        ("/tokens/count", {"model": "gpt-4o", "text": 5}),  # a wrong type
        ("/tokens/count", {"model": "gpt-4oo", "text": "x"}),  # an unknown model
    ],
)
def test_other_schema_and_model_failures_carry_a_fix(
    client: TestClient, path: str, body: dict[str, Any]
) -> None:
    _fix(client.post(path, json=body))


@pytest.mark.parametrize("day", ["yesterday", "2026-13-01", "24/11/2026"])
def test_a_report_day_that_is_no_date_says_how_to_write_it(client: TestClient, day: str) -> None:
    assert "YYYY-MM-DD" in _fix(client.get("/usage/report", params={"day": day}))
