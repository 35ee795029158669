"""``report`` and ``budgets`` tables never cut a number or an id, whatever the output's width.

Piped (not a terminal) a table is as wide as its widest row, so ``grep`` finds a whole row; on a
narrow terminal a table too wide for it is printed as records. Run as the installed command, with ``$COLUMNS``
unset, as a user's shell or pipe would.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from tokenbudget_core.budgets import load_policy
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.pricing import cost_of, format_usd
from tokenbudget_core.stores import open_store
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")

SCRIPT = Path(sys.executable).with_name("tokenbudget")
DAY = "2026-11-18"
AT = datetime(2026, 11, 18, 12, tzinfo=UTC).timestamp()
# Ids sharing a long prefix: cut to a few characters, they would look the same.
USERS = ("customer-000000001@example.com", "customer-000000002@example.com")
BIG = Usage(input_tokens=90_000_000, output_tokens=9_000_000)
SMALL = Usage(input_tokens=1_000)
POLICY = """
[features.support]
user_daily_tokens = 100000000
user_daily_usd = "5000"
"""


def environment() -> dict[str, str]:
    """The process environment with no width or colour forced on the command."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "FORCE_COLOR", "TTY_COMPATIBLE")
    }
    return {**env, "NO_COLOR": "1"}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.db"
    ledger = Ledger(open_store(f"sqlite:///{path}"), clock=lambda: AT)
    for user, usage in zip(USERS, (BIG, SMALL), strict=True):
        ledger.record(usage, model="gpt-4o", feature="support", user=user)
    ledger.close()
    return path


def piped(*args: str) -> str:
    result = subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, encoding="utf-8", env=environment(), check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_piped_report_rows_are_whole(db: Path) -> None:
    out = piped("report", "--store", f"sqlite:///{db}", "--day", DAY, "--by", "user")
    assert "…" not in out
    for user, usage in zip(USERS, (BIG, SMALL), strict=True):
        (row,) = [line for line in out.splitlines() if user in line]  # what `grep USER` prints
        assert format_usd(cost_of(usage, "gpt-4o")) in row
        assert f"{usage.input_tokens:,}" in row
    assert format_usd(cost_of(BIG, "gpt-4o") + cost_of(SMALL, "gpt-4o")) in out


def test_piped_budgets_rows_are_whole(tmp_path: Path) -> None:
    db = tmp_path / "today.db"
    ledger = Ledger(open_store(f"sqlite:///{db}"))  # today, on the real clock, like the command's
    ledger.record(BIG, model="gpt-4o", feature="support", user=USERS[0])
    ledger.close()
    policy = tmp_path / "budgets.toml"
    policy.write_text(POLICY, encoding="utf-8")
    assert load_policy(policy).features["support"].user_daily_usd == Decimal(5000)
    out = piped("budgets", "--store", f"sqlite:///{db}", "--policy", str(policy), "--user", USERS[0])
    assert "…" not in out
    (tokens,) = [line for line in out.splitlines() if "user_daily_tokens" in line]
    (usd,) = [line for line in out.splitlines() if "user_daily_usd" in line]
    assert f"{100_000_000:,}" in tokens
    assert f"{BIG.total_tokens:,}" in tokens
    assert format_usd(Decimal(5000)) in usd
    assert format_usd(cost_of(BIG, "gpt-4o")) in usd


def on_terminal(columns: int, *args: str) -> list[str]:
    """The lines ``tokenbudget args`` writes to a terminal ``columns`` wide."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    process = subprocess.Popen(
        [str(SCRIPT), *args], stdout=follower, stderr=subprocess.PIPE, env=environment()
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the command closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    _, errors = process.communicate(timeout=60)
    assert process.returncode == 0, errors
    text = b"".join(chunks).decode("utf-8").replace("\r\n", "\n")
    return re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines()  # the styles (italic titles)


def record(lines: list[str], first: str) -> dict[str, str]:
    """The record a table too wide for the terminal printed for the row whose first cell is
    ``first``: its other cells by column name."""
    at = lines.index(first)
    fields = {}
    for line in lines[at + 1 :]:
        if not line.startswith("  "):
            break
        name, value = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        fields[name] = value
    return fields


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_narrow_terminal_prints_records_with_every_number_whole(tmp_path: Path) -> None:
    path = tmp_path / "one.db"
    ledger = Ledger(open_store(f"sqlite:///{path}"), clock=lambda: AT)
    ledger.record(BIG, model="gpt-4o", feature="support", user=USERS[0])
    ledger.record(SMALL, model="gpt-4o", feature="support", user=USERS[1])
    ledger.close()
    columns = 50
    lines = on_terminal(columns, "report", "--store", f"sqlite:///{path}", "--day", DAY, "--by", "user")
    assert all(len(line) <= columns for line in lines), lines
    assert not any("…" in line for line in lines)
    assert "by user" in lines
    for user, usage in zip(USERS, (BIG, SMALL), strict=True):
        fields = record(lines, user)
        assert fields["requests"] == "1"
        assert fields["input"] == f"{usage.input_tokens:,}"
        assert fields["output"] == f"{usage.output_tokens:,}"
        assert fields["cost"] == format_usd(cost_of(usage, "gpt-4o"))
    total = format_usd(cost_of(BIG, "gpt-4o") + cost_of(SMALL, "gpt-4o"))
    assert f"cost: {total}" in lines  # the two-column totals table: name: value


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_narrow_terminal_budgets_as_records(tmp_path: Path) -> None:
    db = tmp_path / "today.db"
    ledger = Ledger(open_store(f"sqlite:///{db}"))  # today, on the real clock, like the command's
    ledger.record(BIG, model="gpt-4o", feature="support", user=USERS[0])
    ledger.close()
    policy = tmp_path / "budgets.toml"
    policy.write_text(POLICY, encoding="utf-8")
    lines = on_terminal(
        40, "budgets", "--store", f"sqlite:///{db}", "--policy", str(policy), "--user", USERS[0]
    )
    tables = [line for line in lines if not line.startswith("ladder step")]  # a sentence, not a table
    assert all(len(line) <= 40 for line in tables), lines
    fields = record(lines, "user_daily_usd")
    assert fields["limit"] == format_usd(Decimal(5000))
    assert fields["spent + reserved"] == format_usd(cost_of(BIG, "gpt-4o"))
    assert record(lines, "user_daily_tokens")["spent + reserved"] == f"{BIG.total_tokens:,}"


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_wide_terminal_draws_tables(db: Path) -> None:
    lines = on_terminal(200, "report", "--store", f"sqlite:///{db}", "--day", DAY, "--by", "user")
    (row,) = [line for line in lines if USERS[0] in line]
    assert row.startswith("│")  # a table's row
    assert format_usd(cost_of(BIG, "gpt-4o")) in row


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_cost_on_a_narrow_terminal_cuts_no_figure() -> None:
    lines = on_terminal(30, "cost", "--model", "gpt-4o", "--input", "12000", "--output", "3000")
    assert not any("…" in line for line in lines), lines
    total = format_usd(cost_of(Usage(input_tokens=12000, output_tokens=3000), "gpt-4o"))
    assert any(total in line for line in lines), lines


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_explain_on_a_narrow_terminal_shows_every_models_total_whole() -> None:
    report = json.loads(piped("explain", "--model", "gpt-4o-mini", "--json"))
    lines = on_terminal(40, "explain", "--model", "gpt-4o-mini")
    for cost in report["costs"]:
        total = format_usd(Decimal(cost["total"]))
        assert any(line.split()[-1:] == [total] for line in lines), (total, lines)
