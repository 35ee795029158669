"""``HEAD /health`` answers as ``GET`` does (200, or 503 with the store down), without a body, for
uptime checkers that probe with ``HEAD``; ``tokenbudget budgets --user ""`` (or ``--feature ""``),
what ``--user "$U"`` with ``U`` unset gives, is a one-line error naming the flag, as the service
refuses an empty ``?user=``, not an anonymous payer's budgets."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cli_support import assert_one_line_error, run
from tokenbudget_core.cli import EXIT_BAD_INPUT
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.server import create_app
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")


def test_head_health_is_200_without_a_body_and_public() -> None:
    with TestClient(create_app("memory://", token="secret")) as c:
        head, get = c.head("/health"), c.get("/health")
    assert head.status_code == get.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == "application/json"


def test_head_health_is_503_with_the_store_down() -> None:
    with TestClient(create_app("redis://127.0.0.1:1/0")) as c:
        head = c.head("/health")
        assert head.status_code == 503
        assert head.content == b""


def test_openapi_lists_health_once() -> None:
    with TestClient(create_app("memory://")) as c:
        assert set(c.get("/openapi.json").json()["paths"]["/health"]) == {"get"}


@pytest.fixture
def store(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(url)
    ledger.record(Usage(input_tokens=1_000), model="gpt-4o", feature="support")
    ledger.close()
    return url


@pytest.mark.parametrize("flag", ["--user", "--feature"])
def test_budgets_refuses_an_empty_id(store: str, tmp_path: Path, flag: str) -> None:
    policy = tmp_path / "budgets.toml"
    policy.write_text('user_daily_usd = "1"\n[features.support]\nuser_daily_usd = "0.5"\n', encoding="utf-8")
    for as_json in ([], ["--json"]):
        result = run("budgets", "--store", store, "--policy", str(policy), flag, "", *as_json)
        assert_one_line_error(result, EXIT_BAD_INPUT, flag, "empty", f"leave {flag} out")
