"""A service token with surrounding whitespace (a secret file read with its trailing newline) is
the secret itself: ``Bearer s3cret`` matches it. Before, the guard stripped the token the client
sent but not its own, so such a token, accepted at start, matched no request at all. A token
that is only whitespace is still refused."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.server import create_app

pytestmark = pytest.mark.usefixtures("isolated")


@pytest.mark.parametrize("token", ["s3cret\n", " s3cret", "\ts3cret \r\n", "s3cret"])
def test_a_token_with_surrounding_whitespace_matches_the_secret(token: str) -> None:
    with TestClient(create_app("memory://", token=token)) as client:
        assert client.get("/budgets", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.get("/budgets", headers={"Authorization": "Bearer s3cret\t"}).status_code == 200
        assert client.get("/budgets", headers={"Authorization": "Bearer s3cre"}).status_code == 401
        assert client.get("/budgets", headers={"Authorization": "Bearer s3cret2"}).status_code == 401
        assert client.get("/budgets").status_code == 401


@pytest.mark.parametrize("token", ["", " ", "\n", " \t\r\n "])
def test_a_blank_token_is_still_refused(token: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        create_app("memory://", token=token)
    assert caught.value.field == "token"
