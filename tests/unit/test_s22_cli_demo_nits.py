"""``tokenbudget demo``'s rough edges (review s22 #4): a figure out of range is named by its flag;
an in-process ``--store`` is not followed by a ``report`` command that refuses it; piped, a line
is never cut at 80 columns; an ``--html`` path that cannot be written is refused before the run."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_support import assert_one_line_error, run
from tokenbudget_core.cli import EXIT_BAD_INPUT, EXIT_OK

pytest.importorskip("langchain_core")
pytestmark = pytest.mark.usefixtures("isolated")

SMALL = ("--users", "1", "--turns", "1", "--no-progress")


@pytest.mark.parametrize(
    ("flag", "value", "high"), [("--users", "20000", "10000"), ("--turns", "500", "200")]
)
def test_a_figure_out_of_range_names_its_flag(flag: str, value: str, high: str) -> None:
    args = {"--users": "1", "--turns": "1"} | {flag: value}
    result = run("demo", "--no-progress", "--html", "-", *[x for kv in args.items() for x in kv])
    assert_one_line_error(result, EXIT_BAD_INPUT, f"{flag}: must be an integer from 1 to {high}")


@pytest.mark.parametrize("store", ["memory://", "sqlite:///:memory:"])
def test_an_in_process_store_is_not_suggested_to_report(store: str) -> None:
    result = run("demo", *SMALL, "--store", store, "--html", "-")
    assert result.exit_code == EXIT_OK, result.output
    last = result.stdout.splitlines()[-1]
    assert last.startswith(f"ledger: {store}")
    assert "report --store memory" not in last
    assert "report --store sqlite:///:memory:" not in last
    assert "in-process" in last
    refused = run("report", "--store", store)  # what was suggested before: refused
    assert refused.exit_code == EXIT_BAD_INPUT


def test_piped_lines_are_whole_not_cut_at_80_columns(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / ('a-long-file-name-' * 3)}demo.db"
    result = run("demo", *SMALL, "--store", store, "--html", "-")
    assert result.exit_code == EXIT_OK, result.output
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("ledger: "))
    assert len(line) > 80
    assert line.endswith("--by feature)"), line
    assert all(ln == ln.rstrip() for ln in result.stdout.splitlines() if not ln.startswith(("┃", "│", " ")))


def test_an_unwritable_html_path_is_refused_before_the_run(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    html = tmp_path / "no-such-folder" / "report.html"
    result = run("demo", *SMALL, "--store", f"sqlite:///{db}", "--html", str(html))
    assert_one_line_error(result, EXIT_BAD_INPUT, "--html", "cannot write")
    assert not db.exists(), "the run went ahead (its spend written) before the --html path was refused"


def test_a_writable_html_path_checked_first_is_written_after(tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    result = run("demo", *SMALL, "--store", f"sqlite:///{tmp_path / 'demo.db'}", "--html", str(html))
    assert result.exit_code == EXIT_OK, result.output
    assert html.read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html")


def test_the_suggested_report_command_shows_the_runs_own_day(tmp_path: Path) -> None:
    """The printed follow-up names the run's day (a run that crossed midnight is charged to the
    day it started on, which "today" would miss), and run as printed it shows the run."""
    store = f"sqlite:///{tmp_path / 'demo.db'}"
    result = run("demo", *SMALL, "--store", store, "--html", "-")
    assert result.exit_code == EXIT_OK, result.output
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("ledger: "))
    suggested = line.split("(try: tokenbudget ", 1)[1].rstrip(")").split()
    day = suggested[suggested.index("--day") + 1]
    shown = run(*suggested)
    assert shown.exit_code == EXIT_OK, shown.output
    assert "demo:baseline" in shown.stdout
    assert day in shown.stdout
