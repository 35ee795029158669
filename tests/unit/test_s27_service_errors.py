"""HTTP service errors (review s27 A3, A4, A5, A7): a lone surrogate escape in a text field is a
422 on ``body`` (it was a 500: the echoed text cannot be written as UTF-8); an unknown
``premium_model`` is named as such (it said ``field: model``, the known model); the unknown-model
fix names what an HTTP client can do (it said "pass fallback=", a field no endpoint takes, and not
``unknown_model: "unpriced"``); ``serve()`` refuses a bad host or port by name."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.server import create_app, serve

USAGE = {"input_tokens": 100, "output_tokens": 10}


@pytest.fixture
def client() -> TestClient:
    return TestClient(create_app("memory://"), raise_server_exceptions=False)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/prompt/build", b'{"user": "hi \\ud800", "max_tokens": 100}'),
        ("/tokens/truncate", b'{"text": "x \\udc00 y", "max_tokens": 5, "strategy": "keep_both"}'),
        ("/tokens/count", b'{"text": "\\ud83d", "model": "gpt-4o"}'),
    ],
)
def test_a_lone_surrogate_escape_is_a_422_on_the_body(client: TestClient, path: str, body: bytes) -> None:
    response = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["field"] == "body"
    assert "lone UTF-16 surrogate" in response.json()["message"]


def test_a_surrogate_pair_and_an_escaped_backslash_are_text(client: TestClient) -> None:
    for text in (b'"\\ud83d\\ude00 ok"', b'"\\\\ud800 is how you write it"'):
        body = b'{"text": ' + text + b', "model": "gpt-4o"}'
        response = client.post("/tokens/count", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 200, response.json()


@pytest.mark.parametrize("path", ["/usage/record", "/budget/commit"])
def test_an_unknown_premium_model_is_named_premium_model(client: TestClient, path: str) -> None:
    body: dict[str, Any] = {"model": "gpt-4o-mini", "premium_model": "gpt-4o-typo", "usage": USAGE}
    if path == "/budget/commit":
        reservation = client.post("/budget/reserve", json={"model": "gpt-4o-mini", "input_tokens": 100})
        body["reservation"] = reservation.json()
    error = client.post(path, json=body).json()
    assert error["error"] == "unknown_model"
    assert error["field"] == "premium_model"
    assert error["model"] == "gpt-4o-typo"
    assert "leave premium_model out" in error["fix"]


@pytest.mark.parametrize("path", ["/usage/record", "/tokens/count"])
def test_the_unknown_model_fix_names_what_a_client_can_send(client: TestClient, path: str) -> None:
    body = (
        {"model": "my-new-model", "usage": USAGE}
        if path == "/usage/record"
        else {"text": "hi", "model": "my-new-model"}
    )
    error = client.post(path, json=body).json()
    assert error["field"] == "model"
    assert "fallback" not in error["message"] + error["fix"]
    assert "$TOKENBUDGET_MODELS" in error["fix"]
    assert ('"unknown_model": "unpriced"' in error["fix"]) == (path == "/usage/record")


@pytest.mark.parametrize(
    ("option", "value"),
    [("port", "8000"), ("port", 70_000), ("port", -1), ("port", True), ("host", None), ("host", " ")],
)
def test_serve_refuses_a_bad_host_or_port_by_name(option: str, value: object) -> None:
    with pytest.raises(InvalidInputError, match=rf"^{option}: "):
        serve("memory://", **{option: value})  # type: ignore[arg-type]
