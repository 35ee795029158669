"""Errors name what the user typed: a CLI error names the flag (``--cache-read``, ``--policy``,
``--timezone``, ``--day``), never the Python parameter behind it; an HTTP error names the body's
own field and gives an HTTP fix, not a Python one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cli_support import assert_one_line_error, run
from tokenbudget_core.cli import EXIT_BAD_INPUT
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.server import create_app
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")


@pytest.fixture
def store(tmp_path: Path) -> str:
    path = tmp_path / "ledger.db"
    ledger = Ledger(f"sqlite:///{path}")
    ledger.record(Usage(input_tokens=10, output_tokens=1), model="gpt-4o")
    ledger.close()
    return f"sqlite:///{path}"


@pytest.mark.parametrize(
    ("args", "flag", "absent"),
    [
        (("--cache-read", "20"), "--cache-read", "cache_read_tokens"),
        (("--cache-write", "20"), "--cache-write", "cache_write_tokens"),
        (("--cache-write", "5", "--cache-write-1h", "6"), "--cache-write-1h", "cache_write_1h_tokens"),
        (("--reasoning", "9"), "--reasoning", "reasoning_tokens"),
    ],
)
def test_cost_names_the_flag_of_a_figure_too_large(args: tuple[str, ...], flag: str, absent: str) -> None:
    result = run("cost", "-m", "gpt-4o", "--input", "10", "--output", "5", *args)
    assert_one_line_error(result, EXIT_BAD_INPUT, f"error: {flag}: ")
    assert absent not in result.stderr
    assert "input_tokens" not in result.stderr
    assert "output_tokens" not in result.stderr


def test_budgets_names_the_policy_flag(store: str) -> None:
    result = run("budgets", "--store", store, "--policy", "nope.toml")
    assert_one_line_error(result, EXIT_BAD_INPUT, "error: --policy: ", "nope.toml")
    assert "policy_file" not in result.stderr


@pytest.mark.parametrize("command", ["report", "budgets"])
def test_an_unknown_zone_names_the_timezone_flag(store: str, command: str, tmp_path: Path) -> None:
    policy = tmp_path / "budgets.toml"
    policy.write_text('daily_usd = "1"\n', encoding="utf-8")
    extra = ("--policy", str(policy)) if command == "budgets" else ()
    result = run(command, "--store", store, "--timezone", "Mars/Olympus", *extra)
    assert_one_line_error(result, EXIT_BAD_INPUT, "error: --timezone: ", "Mars/Olympus")


def test_a_malformed_day_names_the_day_flag(store: str) -> None:
    assert_one_line_error(
        run("report", "--store", store, "--day", "18/11/2026"), EXIT_BAD_INPUT, "error: --day: "
    )


@pytest.mark.parametrize("top", ["-1", "0", "x"])
def test_top_says_positive(store: str, top: str) -> None:
    result = run("report", "--store", store, "--top", top)
    assert_one_line_error(result, EXIT_BAD_INPUT, "--top", "must be a positive integer")
    assert "non-negative" not in result.stderr


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Ledger("memory://"))) as c:
        yield c


def test_cost_estimate_names_the_flat_body_field(client: TestClient) -> None:
    response = client.post(
        "/cost/estimate", json={"model": "gpt-4o", "input_tokens": 1, "cache_read_tokens": 5}
    )
    assert response.status_code == 422
    assert response.json()["field"] == "cache_read_tokens"
    assert not response.json()["message"].startswith("usage.")


def test_record_with_a_time_without_zone_is_422_naming_at(client: TestClient) -> None:
    body = {"model": "gpt-4o", "usage": {"input_tokens": 1}, "at": "2026-11-23T10:00:00"}
    response = client.post("/usage/record", json=body)
    assert response.status_code == 422
    assert response.json()["field"] == "body.at"
    assert "timezone" in response.json()["message"]
    assert "datetime.now" not in response.text
    ok = client.post("/usage/record", json=body | {"at": "2026-11-23T10:00:00+01:00"})
    assert ok.status_code == 200, ok.text
