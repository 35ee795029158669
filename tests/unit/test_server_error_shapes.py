"""Every error the service answers has its one JSON shape (``error``, ``message``, ...): unknown
routes, wrong methods and bodies that are not JSON included; public paths are public with or
without a trailing slash."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tokenbudget_core.ledger import Ledger
from tokenbudget_core.server import create_app

pytestmark = pytest.mark.usefixtures("isolated")

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"content-type": "application/json"}


@pytest.fixture
def client() -> Iterator[TestClient]:
    app = create_app(Ledger("memory://"), token=TOKEN)
    with TestClient(app, headers=AUTH, follow_redirects=False) as c:
        yield c


def _shape(body: Any, kind: str) -> None:
    assert isinstance(body, dict), body
    assert "detail" not in body or isinstance(body["detail"], list), body  # not FastAPI's {"detail": "..."}
    assert body["error"] == kind, body
    assert isinstance(body["message"], str), body
    assert body["message"], body


# -- unknown routes and wrong methods -------------------------------------------------------------


@pytest.mark.parametrize("path", ["/nope", "/tokens", "/dashboard/static/", "/budget/reserve/extra"])
def test_an_unknown_route_is_404_in_our_shape(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    _shape(response.json(), "not_found")
    assert path in response.json()["message"]
    assert "/docs" in response.json()["message"]  # where the endpoints are listed


def test_a_missing_static_file_is_the_same_404(client: TestClient) -> None:
    _shape(client.get("/dashboard/static/nope.js").json(), "not_found")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/tokens/count", "POST"),
        ("PUT", "/budget/reserve", "POST"),
        ("DELETE", "/usage/report", "GET"),
        ("POST", "/health", "GET"),
        ("POST", "/dashboard", "GET"),
    ],
)
def test_a_wrong_method_is_405_in_our_shape_with_allow(
    client: TestClient, method: str, path: str, allow: str
) -> None:
    response = client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    body = response.json()
    _shape(body, "method_not_allowed")
    for needle in (method, path, allow):
        assert needle in body["message"]


def test_without_the_token_an_unknown_route_is_still_401(client: TestClient) -> None:
    response = client.get("/nope", headers={"Authorization": ""})
    assert response.status_code == 401
    _shape(response.json(), "unauthorized")


# -- bodies that are not JSON ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "where"),
    [
        (b'{"model": "gpt-4o", "text": ', "line 1, column 29"),
        (b'{"model": "gpt-4o",\n "text": "hi",\n}', "line 3, column 1"),
        (b"not json", "line 1, column 1"),
    ],
)
def test_malformed_json_is_422_naming_the_body(client: TestClient, content: bytes, where: str) -> None:
    response = client.post("/tokens/count", content=content, headers=JSON)
    assert response.status_code == 422
    body = response.json()
    _shape(body, "validation_error")
    assert body["field"] == "body"
    assert body["message"].startswith("body: is not valid JSON: ")
    assert where in body["message"]
    assert "application/json" in body["fix"]
    assert [d["loc"] for d in body["detail"]] == [["body"]]


def test_a_body_that_is_not_utf8_is_the_same_422(client: TestClient) -> None:
    response = client.post("/tokens/count", content=b'{"model": "gpt-4o", "text": "caf\xe9"}', headers=JSON)
    assert response.status_code == 422  # FastAPI's own answer is a 400 {"detail": ...}
    body = response.json()
    _shape(body, "validation_error")
    assert body["field"] == "body"
    assert body["message"].startswith("body: is not valid JSON: ")
    assert "invalid UTF-8 byte 0xe9 at line 1, column 33" in body["message"]


def test_json_nested_too_deeply_is_the_same_422(client: TestClient) -> None:
    content = b"[" * 100_000 + b"]" * 100_000
    response = client.post("/tokens/count", content=content, headers=JSON)
    assert response.status_code == 422
    body = response.json()
    _shape(body, "validation_error")
    assert body["field"] == "body"
    assert "nested too deeply" in body["message"]


@pytest.mark.parametrize("headers", [{"content-type": "text/plain"}, {}])
def test_a_body_not_sent_as_json_says_how_to_send_it(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post("/tokens/count", content=b'{"model": "gpt-4o", "text": "hi"}', headers=headers)
    assert response.status_code == 422
    body = response.json()
    _shape(body, "validation_error")
    assert body["field"] == "body"
    assert "Content-Type: application/json" in body["message"] + body["fix"]


def test_form_data_says_how_to_send_json(client: TestClient) -> None:  # curl -d without -H
    response = client.post("/tokens/count", data={"model": "gpt-4o", "text": "hi"})
    assert response.status_code == 422
    assert response.json()["field"] == "body"
    assert "application/json" in response.json()["fix"]


@pytest.mark.parametrize(
    ("content", "kind"), [(b"[1, 2]", "an array"), (b'"hi"', "a string"), (b"3", "a number")]
)
def test_json_that_is_not_an_object_is_422_naming_the_body(
    client: TestClient, content: bytes, kind: str
) -> None:
    response = client.post("/tokens/count", content=content, headers=JSON)
    assert response.status_code == 422
    body = response.json()
    assert body["field"] == "body"
    assert body["message"] == f"body: must be a JSON object, not {kind}"


def test_an_empty_body_is_422_naming_the_body(client: TestClient) -> None:
    response = client.post("/tokens/count", content=b"", headers=JSON)
    assert response.status_code == 422
    body = response.json()
    assert body["field"] == "body"
    assert "empty" in body["message"]


def test_field_errors_keep_naming_the_field(client: TestClient) -> None:
    response = client.post("/tokens/truncate", json={"text": "a", "max_tokens": -1})
    assert response.status_code == 422
    assert response.json()["field"] == "body.max_tokens"
    assert response.json()["message"].startswith("body.max_tokens: ")


# -- trailing slashes -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/dashboard", "/health", "/openapi.json", "/docs"])
def test_a_public_path_with_a_trailing_slash_needs_no_token(path: str) -> None:
    with TestClient(create_app(Ledger("memory://"), token=TOKEN), follow_redirects=False) as anonymous:
        assert anonymous.get(path).status_code == 200
        slashed = anonymous.get(path + "/")
        assert slashed.status_code == 307, slashed.text  # as every route: redirected, not refused
        assert slashed.headers["location"].endswith(path)
        followed = anonymous.get(path + "/", follow_redirects=True)
        assert followed.status_code == 200
        assert followed.url.path == path


@pytest.mark.parametrize("path", ["/dashboard/data/", "/usage/report/", "/budgets/", "/metrics/"])
def test_a_private_path_with_a_trailing_slash_still_needs_the_token(path: str) -> None:
    with TestClient(create_app(Ledger("memory://"), token=TOKEN), follow_redirects=False) as anonymous:
        assert anonymous.get(path).status_code == 401
        assert anonymous.get(path, headers=AUTH).status_code == 307


# -- the other routes -----------------------------------------------------------------------------


def test_an_unexpected_failure_is_500_in_our_shape_without_internals() -> None:
    ledger = Ledger("memory://")
    app = create_app(ledger)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals")

    ledger.reserve = broken  # type: ignore[method-assign]
    with TestClient(app, raise_server_exceptions=False) as c:
        response = c.post(
            "/budget/reserve", json={"model": "gpt-4o", "input_tokens": 1, "max_output_tokens": 1}
        )
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    _shape(response.json(), "internal_error")
    assert "secret" not in response.text


def test_health_names_the_store_as_every_budget_unavailable_body_does(tmp_path: Any) -> None:
    down = Ledger("redis://127.0.0.1:1/0", spool_path=tmp_path / "spool.jsonl")
    with TestClient(create_app(down)) as c:
        health = c.get("/health")
        reserve = c.post(
            "/budget/reserve", json={"model": "gpt-4o", "input_tokens": 1, "max_output_tokens": 1}
        )
    assert health.status_code == reserve.status_code == 503
    assert health.json()["status"] == "down"
    assert health.json()["store"] == reserve.json()["store"] == "redis://127.0.0.1:1/0"
    assert health.json()["error"] == reserve.json()["error"] == "budget_unavailable"
