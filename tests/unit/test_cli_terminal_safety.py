"""Ids recorded by an app reach the operator's terminal through ``report`` and ``budgets``: their
control characters (escape sequences, bells, newlines, bidi overrides) are shown as escapes, never
sent to the terminal, and never split a table row."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cli_support import assert_one_line_error, run
from tokenbudget_core.cli import EXIT_BAD_INPUT
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")

# (as recorded, as shown)
HOSTILE = (
    ("evil\x1b]0;pwned\x07\x1b[2J", "evil\\x1b]0;pwned\\x07\\x1b[2J"),
    ("two\nlines", "two\\nlines"),
    ("tab\there\r", "tab\\there\\r"),
    ("rtl\u202egnp.exe", "rtl\\u202egnp.exe"),
    ("del\x7fc1\x9b", "del\\x7fc1\\x9b"),
    ("ad\u200bmin", "ad\\u200bmin"),  # an invisible character: looks like "admin" when shown raw
)
RAW = ("\x1b", "\x07", "\r", "\u202e", "\x7f", "\x9b", "\u200b")


@pytest.fixture(autouse=True)
def _wide(monkeypatch: pytest.MonkeyPatch, isolated: None) -> None:
    monkeypatch.setenv("COLUMNS", "240")


@pytest.fixture
def ledger_file(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.db"
    ledger = Ledger(f"sqlite:///{path}")
    for i, (recorded, _) in enumerate(HOSTILE):
        ledger.record(
            Usage(input_tokens=1_000 + i, output_tokens=100), model="gpt-4o", feature=recorded, user=recorded
        )
    ledger.close()
    return path


def _rows(out: str) -> list[list[str]]:
    return [[c.strip() for c in re.split(r"[│┃]", line)[1:-1]] for line in out.splitlines() if "│" in line]


@pytest.mark.parametrize("by", ["user", "feature", "model"])
def test_report_shows_control_characters_as_escapes(ledger_file: Path, by: str) -> None:
    result = run("report", "--store", f"sqlite:///{ledger_file}", "--by", by, "--days", "1")
    assert result.exit_code == 0, result.output
    for raw in RAW:
        assert raw not in result.stdout
    first_cells = [row[0] for row in _rows(result.stdout) if row]
    for _, shown in HOSTILE:  # one row each (the p50/p95 table is by feature whatever --by is)
        assert shown in first_cells, (shown, result.stdout)
    # no row was split: every table line that starts a row has its figures
    for row in _rows(result.stdout):
        if row and row[0] in {s for _, s in HOSTILE}:
            assert all(cell for cell in row[1:3]), row


def test_budgets_does_not_echo_a_user_id_raw(ledger_file: Path, tmp_path: Path) -> None:
    policy = tmp_path / "budgets.toml"
    policy.write_text('[default_feature]\nuser_daily_usd = "5"\n', encoding="utf-8")
    for recorded, shown in HOSTILE:
        result = run(
            "budgets",
            "--store",
            f"sqlite:///{ledger_file}",
            "--policy",
            str(policy),
            "--feature",
            recorded,
            "--user",
            recorded,
        )
        assert result.exit_code == 0, result.output
        for raw in RAW:
            assert raw not in result.stdout
        assert f"{shown}: budgets on" in result.stdout
        assert f"ladder step for {shown} user {shown}: " in result.stdout


def test_an_error_line_never_carries_a_control_character() -> None:
    result = run("report", "--store", "memory://\x1b[2J\x07")
    assert_one_line_error(result, EXIT_BAD_INPUT, "--store", "memory://\\x1b[2J\\x07")
    assert "\x1b" not in result.stderr
