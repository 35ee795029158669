"""A JSON body with an integer longer than Python converts (``sys.get_int_max_str_digits()``,
4300 digits by default) is the documented ``422`` on ``body`` naming where it is, like every other
body that fails to parse, not FastAPI's bare ``400``."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tokenbudget_core.server import create_app

pytestmark = pytest.mark.usefixtures("isolated")

JSON = {"content-type": "application/json"}


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app("memory://")) as c:
        yield c


@pytest.mark.parametrize("sign", ["", "-"])
def test_a_too_long_integer_is_a_422_on_body(client: TestClient, sign: str) -> None:
    limit = sys.get_int_max_str_digits()
    head = '{"model": "gpt-4o", "note": "' + "1" * (limit + 10) + '\\"", "input_tokens": '
    body = head + sign + "9" * (limit + 1) + "}"
    r = client.post("/budget/reserve", content=body.encode(), headers=JSON)
    assert r.status_code == 422, r.text
    data = r.json()
    assert data["error"] == "validation_error"
    assert data["field"] == "body"
    assert f"an integer of more than {limit} digits" in data["message"]
    assert f"line 1, column {len(head) + 1}" in data["message"]  # the integer, not the long string
    assert data["fix"]


def test_an_integer_at_the_limit_is_parsed(client: TestClient) -> None:
    body = '{"model": "gpt-4o", "input_tokens": ' + "9" * sys.get_int_max_str_digits() + "}"
    r = client.post("/budget/reserve", content=body.encode(), headers=JSON)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "body.input_tokens"  # parsed, then refused as too big a figure
