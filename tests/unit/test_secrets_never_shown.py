"""Store passwords never reach a user: not in HTTP answers (the public /health included), not in
CLI error lines, whether in the URL's userinfo or in its query string."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cli_support import assert_one_line_error, run
from tokenbudget_core.cli import EXIT_BAD_INPUT, EXIT_UNAVAILABLE
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.server import create_app
from tokenbudget_core.stores.base import redact_url

pytestmark = pytest.mark.usefixtures("isolated")

SECRET = "s3cretpw"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def down_url() -> str:
    return f"redis://127.0.0.1:{_closed_port()}/0?password={SECRET}&socket_connect_timeout=0.2"


@pytest.mark.parametrize(
    "url",
    [
        f"redis://127.0.0.1:6379/0?password={SECRET}",
        f"redis://h/0?socket_timeout=1&PASSWORD={SECRET}",
        f"rediss://h/0?ssl_password={SECRET}&db=1",
        f"redis://h/0?pwd={SECRET};x=1",
        f"redis://h/0?pass={SECRET}",
        f"redis://h/0?api_key={SECRET}&secret={SECRET}&auth_token={SECRET}",
        f"redis://h/0?pass%77ord={SECRET}",
        f"redis://:{SECRET}@h:6379/0",
        f"redis://app:{SECRET}@h:6379/0",
        f"postgres://app:{SECRET}@db.internal/ledger",
        f"redis://app:{SECRET}@x@h:6379/0",  # an unencoded '@' in the password
        f"redis://app:{SECRET}/x@h:6379/0",  # an unencoded '/' in the password
        f"redis+cluster://app:{SECRET}@h1:7000,h2:7001",
        f"app:{SECRET}@host",
    ],
)
def test_redact_url_hides_every_password(url: str) -> None:
    shown = redact_url(url)
    assert SECRET not in shown
    assert "***" in shown


def test_redact_url_keeps_what_helps_find_the_store() -> None:
    assert (
        redact_url(f"redis://app:{SECRET}@cache:6379/2?password={SECRET}&socket_timeout=1")
        == "redis://app:***@cache:6379/2?password=***&socket_timeout=1"
    )
    assert redact_url("sqlite:///var/lib/ledger.db") == "sqlite:///var/lib/ledger.db"
    assert redact_url("redis://h:6379/0?client_name=a@b") == "redis://h:6379/0?client_name=a@b"


@pytest.fixture
def down_client(down_url: str, tmp_path: Path) -> Iterator[TestClient]:
    ledger = Ledger(down_url, spool_path=tmp_path / "spool.jsonl")
    with TestClient(create_app(ledger, token="tkn"), raise_server_exceptions=False) as c:
        yield c


def test_public_health_does_not_show_the_store_password(down_client: TestClient) -> None:
    response = down_client.get("/health")  # no token: /health is public
    assert response.status_code == 503
    assert "127.0.0.1" in response.json()["message"]
    assert SECRET not in response.text


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/budget/reserve", {"model": "gpt-4o", "input_tokens": 10, "max_output_tokens": 10}),
        ("POST", "/budget/check", {"model": "gpt-4o", "input_tokens": 10, "max_output_tokens": 10}),
        ("GET", "/usage/report", None),
        ("GET", "/dashboard/data", None),
        ("GET", "/budgets", None),
        ("GET", "/metrics", None),
    ],
)
def test_no_endpoint_shows_the_store_password(
    down_client: TestClient, method: str, path: str, body: dict[str, object] | None
) -> None:
    response = down_client.request(method, path, json=body, headers={"Authorization": "Bearer tkn"})
    assert SECRET not in response.text
    if response.status_code == 503:
        assert SECRET not in response.json()["store"]


def test_cli_unreachable_store_error_hides_the_query_password(down_url: str) -> None:
    result = run("report", "--store", down_url)
    assert_one_line_error(result, EXIT_UNAVAILABLE, "unreachable", "password=***")
    assert SECRET not in result.output


def test_cli_unsupported_store_url_hides_the_password() -> None:
    result = run("report", "--store", f"postgres://app:{SECRET}@db.internal/ledger")
    assert_one_line_error(result, EXIT_BAD_INPUT, "--store", "unsupported store URL", "app:***@db.internal")
    assert SECRET not in result.output


def test_cli_bad_redis_url_hides_the_password() -> None:
    result = run("report", "--store", f"redis://app:{SECRET}@h:notaport/0?password={SECRET}")
    assert result.exit_code != 0
    assert SECRET not in result.output
