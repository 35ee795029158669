"""With its store down, the service's ``503`` gives advice its operator can follow: ``tokenbudget
serve --on-unavailable open`` (``create_app(url, on_unavailable=)``) exists, and ``/health`` says
what the service cannot do instead of "the call was not sent" about a probe nobody sent."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.server import create_app

pytestmark = pytest.mark.usefixtures("isolated")

DOWN = "redis://127.0.0.1:1/0"  # nothing listens on port 1
CALL = {"model": "gpt-4o", "input_tokens": 10, "max_output_tokens": 10}
SCRIPT = Path(sys.executable).with_name("tokenbudget")


def test_closed_service_advises_its_own_option(tmp_path: Path) -> None:
    with TestClient(create_app(DOWN)) as c:
        health = c.get("/health")
        reserve = c.post("/budget/reserve", json=CALL)
    assert health.status_code == reserve.status_code == 503
    assert health.json()["error"] == reserve.json()["error"] == "budget_unavailable"
    assert health.json()["store"] == reserve.json()["store"] == DOWN
    assert health.json()["status"] == "down"
    for body in (health.json(), reserve.json()):
        assert "--on-unavailable open" in body["message"], body
        assert "--store" in body["message"], body
    assert "the call was not sent" not in health.json()["message"]
    assert "reservations are refused" in health.json()["message"]


def test_open_service_lets_reservations_through_unchecked(tmp_path: Path) -> None:
    with TestClient(create_app(DOWN, on_unavailable="open")) as c:
        reserve = c.post("/budget/reserve", json=CALL)
        health = c.get("/health")
    assert reserve.status_code == 201, reserve.json()
    assert reserve.json()["unchecked"] is True
    assert health.status_code == 503
    assert "let through unchecked" in health.json()["message"]
    assert "--on-unavailable open" not in health.json()["message"]  # it already is


def test_create_app_on_unavailable_is_validated(tmp_path: Path) -> None:
    ledger = Ledger("memory://")
    with pytest.raises(InvalidInputError) as e:
        create_app(ledger, on_unavailable="open")
    assert e.value.field == "on_unavailable"
    assert e.value.fix
    assert "Ledger(" in e.value.fix
    with pytest.raises(InvalidInputError) as e:
        create_app("memory://", on_unavailable="ajar")  # type: ignore[arg-type]
    assert e.value.field == "on_unavailable"


def test_a_spool_failure_keeps_its_own_consequence() -> None:
    from tokenbudget_core.errors import BudgetUnavailableError
    from tokenbudget_core.server.error_responses import unavailable_body

    own = BudgetUnavailableError(DOWN, "x", consequence="the usage of request 'r' is not recorded.")
    assert unavailable_body(own, fails_open=False)[1]["message"] == str(own)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def served_open(tmp_path: Path) -> Iterator[str]:
    """``tokenbudget serve --on-unavailable open`` on a store that is down."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "TOKENBUDGET_TOKEN"}
    env["TOKENBUDGET_SPOOL"] = str(tmp_path / "spool.jsonl")
    log = tmp_path / "serve.log"
    out = log.open("wb")
    command = [str(SCRIPT), "serve", "--store", DOWN, "--port", str(port), "--on-unavailable", "open"]
    proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        for _ in range(600):  # readiness, not a timing assertion
            if proc.poll() is not None:
                pytest.fail(f"serve exited {proc.returncode}: {log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.close()


def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def test_serve_on_unavailable_open(served_open: str) -> None:
    status, body = _post(f"{served_open}/budget/reserve", CALL)
    assert status == 201, body
    assert body["unchecked"] is True


def test_serve_refuses_an_unknown_on_unavailable() -> None:
    from cli_support import run
    from tokenbudget_core.cli import EXIT_USAGE

    result = run("serve", "--store", "memory://", "--port", str(_free_port()), "--on-unavailable", "ajar")
    assert result.exit_code == EXIT_USAGE, result.output
    assert "--on-unavailable" in result.stderr
    assert "'closed'" in result.stderr
    assert "'open'" in result.stderr
