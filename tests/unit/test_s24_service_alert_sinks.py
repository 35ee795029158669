"""The service's ledger carries the alert sinks it is given (``create_app(url, alerts=)``,
``tokenbudget serve --alert`` / ``$TOKENBUDGET_ALERTS``).

An alert fires once per store (marked in it), sent by the sinks of whichever ledger's commit
crossed the threshold: when a request to the service crosses it, the service's sinks send it.
Given the sinks the apps give their ledgers, no alert ends up only in the service's log."""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cli_support import assert_one_line_error, run
from tokenbudget_core.alerts import Alert
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.cli import EXIT_BAD_INPUT
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.server import create_app
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")

SCRIPT = Path(sys.executable).with_name("tokenbudget")
USAGE = {"input_tokens": 10_000, "output_tokens": 0}  # $0.025 on gpt-4o


def test_an_alert_the_services_request_crosses_goes_to_the_services_sinks(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    policy = BudgetPolicy(daily_usd=Decimal("1"))
    paged: list[Alert] = []
    app_ledger = Ledger(url, policy=policy, alerts=[paged.append])
    service = TestClient(create_app(url, policy=policy, alerts=[paged.append]))
    try:
        for _ in range(30):  # the app spends $0.75
            app_ledger.record(Usage(**USAGE), model="gpt-4o")
        for _ in range(3):  # the service's client crosses 80%
            assert service.post("/usage/record", json={"model": "gpt-4o", "usage": USAGE}).status_code == 200
        for _ in range(7):  # the app crosses 100%
            app_ledger.record(Usage(**USAGE), model="gpt-4o")
    finally:
        app_ledger.close()
    assert [(a.budget, a.threshold) for a in paged] == [("daily_usd", 0.8), ("daily_usd", 1.0)]


def test_create_app_refuses_sinks_beside_a_ledger_and_names_a_bad_one() -> None:
    with pytest.raises(InvalidInputError) as refused:
        create_app(Ledger("memory://"), alerts=["log"])
    assert refused.value.field == "alerts"
    with pytest.raises(InvalidInputError) as bad:
        create_app("memory://", alerts=["log", "slack"])
    assert bad.value.field == "alerts[1]"


@pytest.fixture
def taken_port() -> Iterator[str]:
    """A port something listens on: a serve that let a bad sink through fails there, never runs."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield str(taken.getsockname()[1])


def test_serve_refuses_a_bad_alert_naming_the_flag(taken_port: str) -> None:
    result = run("serve", "--store", "memory://", "--port", taken_port, "--alert", "log", "--alert", "slack")
    assert_one_line_error(result, EXIT_BAD_INPUT, "--alert", "'log'", "webhook URL")


def test_serve_refuses_a_bad_alert_in_the_variable(monkeypatch: pytest.MonkeyPatch, taken_port: str) -> None:
    monkeypatch.setenv("TOKENBUDGET_ALERTS", "log slack")
    result = run("serve", "--store", "memory://", "--port", taken_port)
    assert_one_line_error(result, EXIT_BAD_INPUT, "$TOKENBUDGET_ALERTS", "webhook URL")


@pytest.mark.parametrize("value", ["", "  "])
def test_serve_refuses_an_empty_alerts_variable(
    monkeypatch: pytest.MonkeyPatch, taken_port: str, value: str
) -> None:
    monkeypatch.setenv("TOKENBUDGET_ALERTS", value)
    result = run("serve", "--store", "memory://", "--port", taken_port)
    assert_one_line_error(result, EXIT_BAD_INPUT, "$TOKENBUDGET_ALERTS")


class _Hook(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _HookHandler)
        self.alerts: list[dict[str, Any]] = []
        self.got = threading.Condition()


class _HookHandler(http.server.BaseHTTPRequestHandler):
    server: _Hook

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(204)
        self.end_headers()
        with self.server.got:
            self.server.alerts.append(body)
            self.server.got.notify_all()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[_Hook]:
    server = _Hook()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize("given", ["flag", "environment"])
def test_tokenbudget_serve_sends_the_alerts_its_requests_cross(
    tmp_path: Path, hook: _Hook, given: str
) -> None:
    policy = tmp_path / "budgets.toml"
    policy.write_text('daily_usd = "0.05"\n', encoding="utf-8")
    webhook = f"http://127.0.0.1:{hook.server_address[1]}/alerts"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("TOKENBUDGET_TOKEN", "TOKENBUDGET_ALERTS")}
    args = [str(SCRIPT), "serve", "--store", f"sqlite:///{tmp_path / 'l.db'}", "--policy", str(policy)]
    args += ["--port", str(port)]
    if given == "flag":
        args += ["--alert", "log", "--alert", webhook]
    else:
        env["TOKENBUDGET_ALERTS"] = f"log {webhook}"
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            for _ in range(600):  # readiness, not a timing assertion: up to ~30 s on a slow machine
                if proc.poll() is not None:
                    pytest.fail(f"serve exited {proc.returncode}: {log.read_text()}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            for _ in range(2):  # $0.05 of $0.05: 80% and 100%
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/usage/record",
                    data=json.dumps({"model": "gpt-4o", "usage": USAGE}).encode(),
                    headers={"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(request, timeout=30) as response:
                    assert response.status == 200
            with hook.got:
                hook.got.wait_for(lambda: len(hook.alerts) >= 2, timeout=60)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert [(a["budget"], a["threshold"]) for a in hook.alerts] == [("daily_usd", 0.8), ("daily_usd", 1.0)]
    assert "passed 80%" in log.read_text()  # and to its log, the other sink given
