"""A model without a known price is never shown as free: every report row counts the unpriced
calls its cost leaves out (``unpriced_requests``: breakdown rows, days, the month), a day whose
calls were all unpriced has no cost per active user (unknown, not $0), the CLI marks such costs
``*`` with a footnote, and the dashboard's data carries the same counts. JSON keeps every field
it had."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cli_support import run
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report
from tokenbudget_core.server import create_app
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")

DAY1 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC).timestamp()  # unpriced calls only
DAY2 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC).timestamp()  # one of each
USAGE = Usage(input_tokens=100_000, output_tokens=10_000)


def _spend(ledger: Ledger) -> None:
    ledger.record(USAGE, model="acme-ft-2026", unknown_model="unpriced", feature="fine", user="u1", at=DAY1)
    ledger.record(USAGE, model="acme-ft-2026", unknown_model="unpriced", feature="fine", user="u1", at=DAY2)
    ledger.record(USAGE, model="gpt-4o", feature="chat", user="u2", at=DAY2)


@pytest.fixture
def ledger() -> Ledger:
    led = Ledger("memory://", clock=lambda: DAY2 + 3600)
    _spend(led)
    return led


def test_rows_count_the_unpriced_calls_their_cost_leaves_out(ledger: Ledger) -> None:
    report = build_report(ledger, days=["2026-11-20", "2026-11-21"], top=1)
    models = {row.key: row for row in report.breakdown("model").rows}
    assert models == {"gpt-4o": models["gpt-4o"]}  # top=1: the unpriced model is the omitted one
    assert models["gpt-4o"].unpriced_requests == 0
    assert report.breakdown("model").omitted_unpriced_requests == 2
    full = build_report(ledger, days=["2026-11-20", "2026-11-21"])
    fine = next(row for row in full.breakdown("model").rows if row.key == "acme-ft-2026")
    assert (fine.requests, fine.unpriced_requests, fine.cost_usd) == (2, 2, Decimal(0))
    assert next(r for r in full.breakdown("feature").rows if r.key == "fine").unpriced_requests == 2
    assert next(r for r in full.breakdown("user").rows if r.key == "u1").unpriced_requests == 2

    day1, day2 = full.per_day
    assert (day1.unpriced_requests, day1.active_users) == (1, 1)
    assert day1.cost_per_active_user_usd is None  # unknown, not $0
    assert day2.unpriced_requests == 1
    assert day2.cost_per_active_user_usd == (day2.cost_usd / 2).quantize(Decimal("1e-9")) > 0  # a lower bound
    assert full.projection.unpriced_requests == 2

    data = full.as_dict()
    row = next(r for r in data["breakdowns"][0]["rows"] if r["key"] == "fine")
    assert row["unpriced_requests"] == 2
    assert row["cost_usd"] == "0"  # the fields it had, unchanged
    assert data["per_day"][0]["cost_per_active_user_usd"] is None
    assert data["projection"]["unpriced_requests"] == 2


def test_the_cli_marks_a_cost_that_leaves_out_unpriced_calls(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    led = Ledger(url)
    now = datetime.now(UTC).timestamp()
    led.record(USAGE, model="acme-ft-2026", unknown_model="unpriced", feature="fine", user="u1", at=now)
    led.record(USAGE, model="gpt-4o", feature="chat", user="u2", at=now - 86_400)
    led.close()
    result = run("report", "--store", url, "--days", "2", "--by", "model")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    fine = next(line for line in lines if "acme-ft-2026" in line)
    assert "$0.000000*" in fine
    gpt = next(line for line in lines if "gpt-4o" in line)
    assert "*" not in gpt
    assert any(
        line.strip().startswith("*: leaves out calls of models without a known price") for line in lines
    )
    today = datetime.now(UTC).date().isoformat()
    day = next(line for line in lines if line.lstrip("│ ").startswith(today))
    cells = [cell.strip() for cell in day.strip("│ ").split("│")]
    assert cells[2] == "$0.000000*"  # cost
    assert cells[4] == "-"  # cost per active user: unknown
    result = run("report", "--store", url, "--days", "2", "--by", "model", "--json")
    rows = {row["key"]: row for row in json.loads(result.stdout)["breakdowns"][0]["rows"]}
    assert rows["acme-ft-2026"]["unpriced_requests"] == 1
    assert rows["gpt-4o"]["unpriced_requests"] == 0


def test_the_dashboard_data_carries_the_same_counts(ledger: Ledger) -> None:
    data = TestClient(create_app(ledger)).get("/dashboard/data?last_days=2").json()
    by_model = {row["key"]: row for row in data["by_model"]}
    assert by_model["acme-ft-2026"]["unpriced_requests"] == 2
    assert by_model["gpt-4o"]["unpriced_requests"] == 0
    assert [(d["unpriced_requests"], d["cost_per_active_user_usd"] is None) for d in data["per_day"]] == [
        (1, True),
        (1, False),
    ]
    assert data["projection"]["unpriced_requests"] == 2
