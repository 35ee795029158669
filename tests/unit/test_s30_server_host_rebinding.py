"""Review s30 (server #1): a service without a token answered any ``Host``, so a web page the
operator opens could rebind its own name to 127.0.0.1 and, same-origin then, record spend and
read the reports (DNS rebinding). Without a token, a request reaching the service through a
loopback address must name a loopback Host (or one the service was told about): any other is
a 421 in the service's error shape."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report
from tokenbudget_core.server import create_app

pytestmark = pytest.mark.usefixtures("isolated")

EVIL = "rebind.attacker.example:8000"
RECORD = {"model": "gpt-4o", "usage": {"input_tokens": 1000, "output_tokens": 100}, "user": "victim"}


def _local(app: Any) -> TestClient:
    """A client reaching the app as a browser on this machine does: through 127.0.0.1:8000."""
    return TestClient(app, base_url="http://127.0.0.1:8000")


def test_a_foreign_host_is_refused_without_a_token() -> None:
    ledger = Ledger("memory://")
    with _local(create_app(ledger)) as c:
        record = c.post("/usage/record", json=RECORD, headers={"Host": EVIL})
        report = c.get("/usage/report", params={"last_days": 1}, headers={"Host": EVIL})
        health = c.get("/health", headers={"Host": EVIL})
    for response in (record, report, health):
        assert response.status_code == 421
        body = response.json()
        assert body["error"] == "misdirected_request"
        assert body["field"] == "Host"
        assert "127.0.0.1" in body["fix"]
        assert "--token" in body["fix"]
        assert body["host"] == EVIL
    assert build_report(ledger, last_days=1).totals.requests == 0  # nothing was recorded


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1:8000", "127.0.0.1", "127.1.2.3:9", "localhost:8000", "LOCALHOST", "[::1]:8000", "[::1]"],
)
def test_loopback_hosts_are_answered(host: str) -> None:
    with _local(create_app("memory://")) as c:
        assert c.post("/usage/record", json=RECORD, headers={"Host": host}).status_code == 200


@pytest.mark.parametrize(
    "host", ["127.0.0.1.attacker.example", "localhost.attacker.example:8000", "0.0.0.0:8000", "10.0.0.1"]
)
def test_names_that_only_look_local_are_refused(host: str) -> None:
    with _local(create_app("memory://")) as c:
        assert c.get("/budgets", headers={"Host": host}).status_code == 421


def test_with_a_token_any_host_is_answered() -> None:
    with _local(create_app("memory://", token="s3cret")) as c:
        answer = c.get("/budgets", headers={"Host": EVIL, "Authorization": "Bearer s3cret"})
    assert answer.status_code == 200


def test_allowed_hosts_extends_the_loopback_ones() -> None:
    with _local(create_app("memory://", allowed_hosts=["tb.internal"])) as c:
        assert c.get("/budgets", headers={"Host": "tb.internal:8000"}).status_code == 200
        assert c.get("/budgets", headers={"Host": EVIL}).status_code == 421
    with _local(create_app("memory://", allowed_hosts=["*"])) as c:  # a proxy in front authenticates
        assert c.get("/budgets", headers={"Host": EVIL}).status_code == 200


def test_requests_through_another_interface_are_not_checked() -> None:
    # reached on a LAN address (a service listening on every interface with --allow-no-auth):
    # the operator let the network in; the Host check guards the loopback socket only
    with TestClient(create_app("memory://"), base_url="http://10.1.2.3:8000") as c:
        assert c.get("/budgets", headers={"Host": EVIL}).status_code == 200


@pytest.mark.parametrize("bad", ["tb.internal", [""], [None], 5])
def test_allowed_hosts_is_validated(bad: Any) -> None:
    with pytest.raises(InvalidInputError) as e:
        create_app("memory://", allowed_hosts=bad)
    assert e.value.field.startswith("allowed_hosts")


# -- a real ``tokenbudget serve``, as the reviewer attacked it ---------------------------------------

SCRIPT = Path(sys.executable).with_name("tokenbudget")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def served(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[int]:
    """``tokenbudget serve`` without a token on 127.0.0.1 (plus the test's ``extra`` options); its port."""
    extra: list[str] = getattr(request, "param", [])
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "TOKENBUDGET_TOKEN"}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(SCRIPT), "serve", "--store", f"sqlite:///{tmp_path / 'l.db'}", "--port", str(port), *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        for _ in range(600):  # readiness, not a timing assertion: up to ~30 s on a slow machine
            if proc.poll() is not None:
                pytest.fail(f"serve exited {proc.returncode}: {log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _send(
    port: int, method: str, path: str, host: str, body: dict[str, Any] | None = None
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Host": host, "Origin": f"http://{host}"}
        payload = None
        if body is not None:
            payload = json.dumps(body)
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_serve_refuses_a_rebound_host(served: int) -> None:
    evil = f"rebind.attacker.example:{served}"
    status, body = _send(served, "POST", "/usage/record", evil, RECORD)
    assert (status, body["error"]) == (421, "misdirected_request")
    status, body = _send(served, "GET", "/usage/report?last_days=1&by=user", evil)
    assert status == 421
    status, body = _send(served, "GET", "/usage/report?last_days=1&by=user", f"127.0.0.1:{served}")
    assert status == 200
    assert body["totals"]["requests"] == 0  # the rebound record never reached the ledger
    assert _send(served, "GET", "/health", f"localhost:{served}")[0] == 200


@pytest.mark.parametrize("served", [["--allow-no-auth"]], indirect=True)
def test_serve_with_allow_no_auth_answers_any_host(served: int) -> None:
    # a proxy in front authenticates and forwards its own Host (the option says so)
    status, body = _send(served, "GET", "/budgets", f"tb.example.com:{served}")
    assert status == 200, body
