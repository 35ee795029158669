"""``tokenbudget serve`` as an operator runs it: the installed script in its own process, on a real
port. Its ledger judges days in the --timezone the apps use, and a port already taken is a
one-line ``error:`` with exit 4 (a resource is unavailable), not uvicorn's own exit."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from cli_support import assert_one_line_error, run
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.cli import EXIT_BAD_INPUT, EXIT_UNAVAILABLE
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")

SCRIPT = Path(sys.executable).with_name("tokenbudget")
ZONE = "Pacific/Kiritimati"  # UTC+14: its day differs from UTC's for 14 hours of every day


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Ledger]]:
    """An app's ledger in ZONE with spend today, and ``tokenbudget serve --timezone ZONE`` on its store."""
    store = f"sqlite:///{tmp_path / 'ledger.db'}"
    app_ledger = Ledger(store, policy=BudgetPolicy(daily_usd=Decimal("1")), timezone=ZONE)
    app_ledger.record(Usage(input_tokens=3_000, output_tokens=100), model="gpt-4o")
    policy = tmp_path / "budgets.toml"
    policy.write_text('daily_usd = "1"\n', encoding="utf-8")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "TOKENBUDGET_TOKEN"}
    log = tmp_path / "serve.log"
    out = log.open("wb")
    proc = subprocess.Popen(
        [
            str(SCRIPT),
            "serve",
            "--store",
            store,
            "--policy",
            str(policy),
            "--port",
            str(port),
            "--timezone",
            ZONE,
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # readiness, not a timing assertion: up to ~30 s on a slow machine
            if proc.poll() is not None:
                pytest.fail(f"serve exited {proc.returncode}: {log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield url, app_ledger
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.close()
        app_ledger.close()


def test_serve_judges_days_in_its_timezone(served: tuple[str, Ledger]) -> None:
    url, app_ledger = served
    with urllib.request.urlopen(f"{url}/budgets", timeout=10) as response:
        data = json.load(response)
    assert data["day"] == datetime.now(ZoneInfo(ZONE)).date().isoformat() == app_ledger.day()
    (daily,) = [b for b in data["budgets"] if b["budget"] == "daily_usd"]
    assert Decimal(daily["headroom"]) == app_ledger.state().headroom["daily_usd"] < 1


def test_serve_refuses_an_unknown_timezone_naming_the_flag() -> None:
    result = run("serve", "--store", "memory://", "--port", str(_free_port()), "--timezone", "Mars/Olympus")
    assert_one_line_error(result, EXIT_BAD_INPUT, "--timezone", "Mars/Olympus")


def test_serve_on_a_taken_port_is_one_line_exit_4() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", "--store", "memory://", "--port", str(port))
    assert_one_line_error(result, EXIT_UNAVAILABLE, "--port", f"127.0.0.1:{port}", "in use")
