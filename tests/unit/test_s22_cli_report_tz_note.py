"""``tokenbudget report`` on days with no usage says to check ``--timezone`` too: the report's days
are UTC unless it is given, so a ledger in another zone can read as empty or a day behind. The
README's command line names the flag. Review s22 #8."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from cli_support import run
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.parametrize("zone", [None, "Pacific/Pago_Pago"])
def test_the_no_usage_note_names_timezone_and_the_zone_read(tmp_path: Path, zone: str | None) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    at = datetime(2026, 11, 18, 12, tzinfo=UTC).timestamp()
    ledger = Ledger(url, clock=lambda: at)
    ledger.record(Usage(input_tokens=10, output_tokens=1), model="gpt-4o")
    ledger.close()

    args = ["report", "--store", url, "--day", "2026-11-20"]
    result = run(*args, *([] if zone is None else ["--timezone", zone]))

    assert result.exit_code == 0, result.output
    note = result.stderr.strip()
    assert note.startswith("note: no usage recorded"), note
    assert "--timezone" in note
    assert f"{zone or 'UTC'} days" in note


def test_the_readme_command_line_names_timezone() -> None:
    text = README.read_text(encoding="utf-8")
    block = text[text.index("## Command line") :]
    block = block[: block.index("```", block.index("```") + 3)]
    for command in ("tokenbudget report", "tokenbudget budgets"):
        line = next(ln for ln in block.splitlines() if ln.startswith(command))
        assert "--timezone" in line, line
