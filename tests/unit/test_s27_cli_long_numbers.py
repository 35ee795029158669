"""A numeric flag with more digits than ``int()`` converts (4,300) is the CLI's one-line
``error: --flag: ...`` with the bad-input exit code, as any other out-of-range figure, not a
traceback; a long run of leading zeros is still the small number it spells."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_support import assert_one_line_error, run
from tokenbudget_core.cli import EXIT_BAD_INPUT

pytestmark = pytest.mark.usefixtures("isolated")

HUGE = "9" * 5_000
SCRIPT = Path(sys.executable).with_name("tokenbudget")


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.mark.parametrize(
    ("flag", "args"),
    [
        ("--days", ("report", "--days", HUGE)),
        ("--top", ("report", "--top", HUGE)),
        ("--days", ("report", "--days", "1" + "0" * 4_999)),
    ],
)
def test_report_flag_too_long_for_int_is_one_line(store: str, flag: str, args: tuple[str, ...]) -> None:
    result = run(*args, "--store", store)
    assert_one_line_error(result, EXIT_BAD_INPUT, f"error: {flag}: ", "5,000 digits")
    assert "Traceback" not in result.stderr


def test_report_days_over_long_is_the_same_exit_as_days_out_of_range(store: str) -> None:
    too_many = run("report", "--store", store, "--days", "800000")
    too_long = run("report", "--store", store, "--days", HUGE)
    assert too_many.exit_code == too_long.exit_code == EXIT_BAD_INPUT


@pytest.mark.parametrize(
    ("flag", "args"),
    [
        ("--input", ("cost", "--model", "gpt-4o", "--input", HUGE, "--output", "1")),
        ("--output", ("cost", "--model", "gpt-4o", "--input", "1", "--output", HUGE)),
        (
            "--cache-read",
            ("cost", "--model", "gpt-4o", "--input", "1", "--output", "1", "--cache-read", HUGE),
        ),
        ("--max-tokens", ("truncate", "-n", HUGE)),
    ],
)
def test_token_flag_too_long_for_int_is_one_line(flag: str, args: tuple[str, ...]) -> None:
    result = run(*args, stdin="some text to cut")
    assert_one_line_error(result, EXIT_BAD_INPUT, f"error: {flag}: ", "5,000 digits")


@pytest.mark.parametrize("flag", ["--users", "--turns", "--seed"])
def test_demo_flag_too_long_for_int_is_one_line(
    flag: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("demo", "--store", "memory://", "--html", "-", "--no-progress", flag, HUGE)
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    lines = result.stderr.splitlines()
    assert lines, result.stderr
    assert lines[-1].startswith(f"error: {flag}: "), result.stderr
    assert "Traceback" not in result.stderr


def test_leading_zeros_do_not_count_towards_the_length() -> None:
    result = run("truncate", "-n", "0" * 5_000 + "3", stdin="one two three four five six seven eight")
    assert result.exit_code == 0, result.output
    assert 0 < len(result.stdout.split()) <= 3


def test_installed_script_has_no_traceback(store: str) -> None:
    out = subprocess.run(
        [str(SCRIPT), "report", "--store", store, "--days", HUGE],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )
    assert out.returncode == EXIT_BAD_INPUT, out.stderr
    assert out.stderr.startswith("error: --days: ")
    assert "Traceback" not in out.stderr
    assert len(out.stderr.splitlines()) == 1
