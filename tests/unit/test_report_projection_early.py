"""No month-end projection before the month's first full local day: $1 in the first second of
the month is not a $2.7M month. The report, its JSON (``GET /usage/report``), the CLI's table
and the dashboard all say so, with the reason and from when it is projected."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from rich.console import Console

from tokenbudget_core.cli import _render_report
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report
from tokenbudget_core.server import create_app
from tokenbudget_core.server.dashboard import dashboard_data, static_file
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")

DOLLAR = Usage(input_tokens=400_000)
"""$1.00 on gpt-4o."""


class Clock:
    def __init__(self, at: datetime) -> None:
        self.now = at.timestamp()

    def __call__(self) -> float:
        return self.now


def a_dollar_at(at: datetime, tmp_path: Path, zone: str = "UTC") -> tuple[Ledger, Clock]:
    clock = Clock(at)
    ledger = Ledger("memory://", timezone=zone, clock=clock, spool_path=tmp_path / "spool.jsonl")
    ledger.record(DOLLAR, model="gpt-4o", feature="chat", user="u1")
    return ledger, clock


def test_one_second_into_the_month_there_is_no_projection_but_a_reason(tmp_path: Path) -> None:
    ledger, _ = a_dollar_at(datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC), tmp_path)
    p = build_report(ledger, last_days=1).projection
    assert p.month_to_date_usd == 1
    assert p.projected_usd is None  # it was $2,678,400
    assert p.available_from == "2026-12-02T00:00:00+00:00"
    assert p.reason is not None
    assert "2026-12-02T00:00:00+00:00" in p.reason
    assert "first full day" in p.reason
    data = json.loads(json.dumps(build_report(ledger, last_days=1).as_dict()))["projection"]
    assert data["projected_usd"] is None
    assert data["reason"] == p.reason
    assert data["available_from"] == "2026-12-02T00:00:00+00:00"


def test_the_projection_starts_at_local_midnight_after_the_first_day(tmp_path: Path) -> None:
    ledger, clock = a_dollar_at(datetime(2026, 12, 1, 9, tzinfo=UTC), tmp_path)
    clock.now = datetime(2026, 12, 1, 23, 59, 59, tzinfo=UTC).timestamp()
    assert build_report(ledger, last_days=1).projection.projected_usd is None
    clock.now = datetime(2026, 12, 2, tzinfo=UTC).timestamp()
    p = build_report(ledger, last_days=1).projection
    assert (p.projected_usd, p.reason) == (31, None)  # one day's $1, 31 days
    assert p.elapsed_days == 1


def test_the_first_day_is_a_local_one_even_when_it_has_25_hours(tmp_path: Path) -> None:
    """New York falls back on 2026-11-01: the month's first day lasts 25 hours."""
    ny = ZoneInfo("America/New_York")
    ledger, clock = a_dollar_at(datetime(2026, 11, 1, 12, tzinfo=ny), tmp_path, "America/New_York")
    clock.now = datetime(2026, 11, 1, 23, 59, tzinfo=ny).timestamp()
    p = build_report(ledger, last_days=1).projection
    assert p.projected_usd is None
    assert p.available_from == "2026-11-02T00:00:00-05:00"
    clock.now = datetime(2026, 11, 2, tzinfo=ny).timestamp()
    p = build_report(ledger, last_days=1).projection
    assert p.projected_usd == (Decimal(30 * 24 + 1) / 25).quantize(Decimal("1e-9"))


def test_the_cli_shows_a_dash_and_the_reason(tmp_path: Path) -> None:
    ledger, _ = a_dollar_at(datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC), tmp_path)
    console = Console(width=250, record=True, color_system=None)
    for table in _render_report(build_report(ledger, last_days=1)):
        console.print(table)
    text = console.export_text()
    line = next(x for x in text.splitlines() if "2026-12 projected" in x and "│" in x)
    assert "- (too early" in line
    assert "2678400" not in line
    assert "$" not in line
    caption = " ".join(text.split())  # the caption wraps at words to the table's width
    assert "2026-12 projected: too early: the month is projected from 2026-12-02T00:00:00+00:00" in caption


def test_the_dashboard_and_the_api_say_why(tmp_path: Path) -> None:
    ledger, _ = a_dollar_at(datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC), tmp_path)
    projection = dashboard_data(ledger)["projection"]
    assert projection["projected_usd"] is None
    assert projection["available_from"] == "2026-12-02T00:00:00+00:00"
    assert "too early" in projection["reason"]
    with TestClient(create_app(ledger)) as client:
        served = client.get("/usage/report", params={"last_days": 1}).json()["projection"]
        assert client.get("/dashboard/data").json()["projection"] == projection
    assert served["projected_usd"] is None
    assert served["reason"] == projection["reason"]
    page = static_file("dashboard.html")[0].decode()
    script = static_file("dashboard.js")[0].decode()
    assert 'id="kpi-projected-note"' in page
    assert '$("kpi-projected-note").textContent = data.projection.reason' in script
