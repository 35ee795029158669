"""``report`` and ``budgets`` on a stdout that is not UTF-8 (a Windows redirect writes cp1252, an
ISO-8859-1 or ASCII locale): an id the encoding cannot write is printed as an escape, the rest
as it is, and the command succeeds. Run as the installed command with ``PYTHONIOENCODING``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tokenbudget_core.ledger import Ledger
from tokenbudget_core.stores import open_store
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")

SCRIPT = Path(sys.executable).with_name("tokenbudget")
USERS = ("用户-1", "zoë 🙂", "plain")
FEATURE = "support-ü"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.db"
    ledger = Ledger(open_store(f"sqlite:///{path}"))  # today, like `budgets`
    for user in USERS:
        ledger.record(Usage(input_tokens=1_000), model="gpt-4o", feature=FEATURE, user=user)
    ledger.close()
    return path


def command(encoding: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE")}
    result = subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        env={**env, "PYTHONIOENCODING": encoding, "NO_COLOR": "1"},
        check=False,
    )
    stderr = result.stderr.decode(encoding, "replace")
    assert result.returncode == 0, stderr
    assert "Traceback" not in stderr
    return result.stdout.decode(encoding)  # strict: everything printed is in the encoding


def shown(text: str, encoding: str) -> str:
    """``text`` with what ``encoding`` cannot write escaped."""
    return text.encode(encoding, "backslashreplace").decode(encoding)


@pytest.mark.parametrize("encoding", ["cp1252", "ascii", "latin-1"])
def test_report_ids_the_encoding_cannot_write_are_escaped(db: Path, encoding: str) -> None:
    out = command(encoding, "report", "--store", f"sqlite:///{db}", "--days", "2", "--by", "user")
    for user in USERS:
        assert shown(user, encoding) in out
    out = command(encoding, "report", "--store", f"sqlite:///{db}", "--days", "2")
    assert shown(FEATURE, encoding) in out


@pytest.mark.parametrize("encoding", ["cp1252", "ascii"])
def test_budgets_for_a_user_the_encoding_cannot_write(db: Path, tmp_path: Path, encoding: str) -> None:
    policy = tmp_path / "budgets.toml"
    policy.write_text(f'[features."{FEATURE}"]\nuser_daily_tokens = 5000\n', encoding="utf-8")
    out = command(
        encoding, "budgets", "--store", f"sqlite:///{db}", "--policy", str(policy), "--user", USERS[0]
    )
    assert shown(f"{FEATURE}: budgets on", encoding) in out
    assert f"ladder step for {shown(f'{FEATURE} user {USERS[0]}', encoding)}: normal" in out
    assert "1,000" in out  # the user's tokens today


def test_utf8_output_is_unchanged(db: Path) -> None:
    out = command("utf-8", "report", "--store", f"sqlite:///{db}", "--days", "2", "--by", "user")
    for user in USERS:
        assert user in out
