"""``tokenbudget report`` / ``budgets`` on input that used to crash or garble them: a ``--days`` too
large for a date, and ids that look like rich markup (``team[eng]``, ``a[/b]``, ``:fire:``).

Real SQLite ledger files in ``tmp_path``, the real command through click's runner and, once, the
installed console script.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cli_support import assert_one_line_error, run
from tokenbudget_core.cli import EXIT_BAD_INPUT
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import MAX_LAST_DAYS, build_report
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")

SCRIPT = Path(sys.executable).with_name("tokenbudget")
# Ids a user or an app may well choose, each of which rich would read as markup or an emoji code.
ODD_IDS = ("team[eng]", "[bold]mallory", "a[/b]", "x[/]", ":fire:", "back\\")


@pytest.fixture(autouse=True)
def _wide(monkeypatch: pytest.MonkeyPatch, isolated: None) -> None:
    monkeypatch.setenv("COLUMNS", "240")  # wide enough that no id is wrapped or cut


@pytest.fixture
def ledger_file(tmp_path: Path) -> Path:
    """A ledger with one call today by each odd id, as user and as feature."""
    path = tmp_path / "ledger.db"
    ledger = Ledger(f"sqlite:///{path}")
    for i, odd in enumerate(ODD_IDS):
        ledger.record(Usage(input_tokens=1_000 + i, output_tokens=100), model="gpt-4o", feature=odd, user=odd)
    ledger.close()
    return path


# -- --days / last_days too large -------------------------------------------------------------------


@pytest.mark.parametrize("days", [str(MAX_LAST_DAYS + 1), "800000", "99999999999", "9" * 40])
def test_report_days_beyond_the_limit_is_one_line(ledger_file: Path, days: str) -> None:
    result = run("report", "--store", f"sqlite:///{ledger_file}", "--days", days)
    assert_one_line_error(result, EXIT_BAD_INPUT, "--days", f"at most {MAX_LAST_DAYS:,}", days)


def test_installed_script_days_beyond_the_limit_has_no_traceback(ledger_file: Path) -> None:
    env = {**os.environ, "TOKENBUDGET_STORE": f"sqlite:///{ledger_file}"}
    out = subprocess.run(
        [str(SCRIPT), "report", "--days", "800000"], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == EXIT_BAD_INPUT, out.stderr
    assert out.stderr.startswith("error: --days: ")
    assert "Traceback" not in out.stderr
    assert len(out.stderr.splitlines()) == 1


def test_report_days_at_the_limit_reports(ledger_file: Path) -> None:
    result = run("report", "--store", f"sqlite:///{ledger_file}", "--days", str(MAX_LAST_DAYS), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data["days"]) == MAX_LAST_DAYS
    assert data["totals"]["requests"] == len(ODD_IDS)


def test_the_days_help_states_the_limit() -> None:
    help_text = " ".join(run("report", "--help").stdout.split())
    assert f"at most {MAX_LAST_DAYS:,}" in help_text


@pytest.mark.parametrize("n", [MAX_LAST_DAYS + 1, 800_000, 10**30])
def test_build_report_last_days_beyond_the_limit_is_invalid_input(n: int) -> None:
    with pytest.raises(InvalidInputError) as info:
        build_report(Ledger("memory://"), last_days=n)
    assert info.value.field == "last_days"
    assert f"{MAX_LAST_DAYS:,}" in str(info.value)
    assert info.value.fix


def test_build_report_last_days_at_the_limit_covers_ten_years() -> None:
    at = datetime(2026, 11, 23, 12, tzinfo=UTC)
    report = build_report(Ledger("memory://", clock=at.timestamp), last_days=MAX_LAST_DAYS)
    assert len(report.days) == MAX_LAST_DAYS
    assert report.days[-1] == "2026-11-23"
    assert report.days[0] == (at.date() - timedelta(days=MAX_LAST_DAYS - 1)).isoformat()


def test_build_report_last_days_reaching_before_year_one_is_invalid_input() -> None:
    early = datetime(3, 1, 1, tzinfo=UTC).timestamp()  # a clock gone badly wrong
    with pytest.raises(InvalidInputError, match="last_days"):
        build_report(Ledger("memory://", clock=lambda: early), last_days=MAX_LAST_DAYS)


# -- ids that look like markup ----------------------------------------------------------------------


def table_cells(out: str) -> set[str]:
    """Every cell of every table row in rich's box-drawn output, stripped."""
    return {cell.strip() for line in out.splitlines() for cell in re.split(r"[│┃]", line)[1:-1]}


@pytest.mark.parametrize("by", ["user", "feature"])
def test_report_shows_ids_as_recorded(ledger_file: Path, by: str) -> None:
    result = run("report", "--store", f"sqlite:///{ledger_file}", "--by", by, "--top", "20")
    assert result.exit_code == 0, result.output
    cells = table_cells(result.stdout)
    for odd in ODD_IDS:
        assert odd in cells, (odd, result.stdout)
    assert "🔥" not in result.stdout


def test_report_percentiles_show_features_as_recorded(ledger_file: Path) -> None:
    result = run("report", "--store", f"sqlite:///{ledger_file}", "--by", "model")
    assert result.exit_code == 0, result.output
    cells = table_cells(result.stdout)  # the p50 / p95 table is by feature whatever --by is
    for odd in ODD_IDS:
        assert odd in cells, (odd, result.stdout)


def test_installed_script_reports_a_closing_tag_id_without_a_traceback(ledger_file: Path) -> None:
    out = subprocess.run(
        [str(SCRIPT), "report", "--store", f"sqlite:///{ledger_file}", "--by", "user"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "240"},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    assert "a[/b]" in table_cells(out.stdout)


@pytest.mark.parametrize("feature", ["eu[/x]", "search[v2]", "[red]alert", ":fire:"])
def test_budgets_title_shows_the_feature_as_written(tmp_path: Path, ledger_file: Path, feature: str) -> None:
    policy = tmp_path / "budgets.toml"
    policy.write_text(f'[features."{feature}"]\nfeature_daily_usd = "5"\n', encoding="utf-8")
    result = run("budgets", "--store", f"sqlite:///{ledger_file}", "--policy", str(policy))
    assert result.exit_code == 0, result.output
    assert f"{feature}: budgets on " in result.stdout, result.stdout
    assert "🔥" not in result.stdout


def test_budgets_title_shows_an_odd_feature_option(tmp_path: Path, ledger_file: Path) -> None:
    policy = tmp_path / "budgets.toml"
    policy.write_text('[default_feature]\nfeature_daily_usd = "5"\n', encoding="utf-8")
    store = ("--store", f"sqlite:///{ledger_file}", "--policy", str(policy))
    result = run("budgets", *store, "--feature", "a[/b]")
    assert result.exit_code == 0, result.output
    assert "a[/b]: budgets on " in result.stdout


@pytest.mark.parametrize("command", ["report", "budgets"])
def test_a_sqlite_store_url_with_a_query_is_named_as_such(tmp_path: Path, command: str) -> None:
    """Options in a SQLite URL's query would name another, empty file: the error says so (not
    "no ledger at ...") and how to fix it."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}?retention_days=3"
    policy = tmp_path / "budgets.toml"
    policy.write_text('daily_usd = "10"\n')
    result = run(command, "--store", url, *(["--policy", str(policy)] if command == "budgets" else []))
    assert_one_line_error(result, EXIT_BAD_INPUT, "--store", "takes no query", "drop the query")
