"""``--store ""`` (a missing variable in ``--store "$LEDGER"``) is refused by every command that
takes it, naming the flag, as ``open_store("")`` is: not read as "the default store", which
would show another ledger's figures (``$TOKENBUDGET_STORE`` or ./tokenbudget.db)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_support import assert_one_line_error, run
from tokenbudget_core.cli import EXIT_BAD_INPUT
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")


@pytest.mark.parametrize(
    "command",
    [
        ("report",),
        ("budgets", "--policy", "{policy}"),
        ("report", "--namespace", "prod"),
        ("demo", "--users", "1", "--turns", "1", "--no-progress", "--html", "-"),
        ("serve", "--port", "18765"),
    ],
)
@pytest.mark.parametrize("empty", ["", " "])
def test_an_empty_store_flag_is_refused_naming_it(
    command: tuple[str, ...], empty: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = f"sqlite:///{tmp_path / 'other.db'}"
    ledger = Ledger(other, alerts=[])  # a ledger the default would have shown instead
    ledger.record(Usage(input_tokens=10, output_tokens=5), model="gpt-4o-mini", feature="chat")
    ledger.close()
    monkeypatch.setenv("TOKENBUDGET_STORE", other)
    policy = tmp_path / "budgets.toml"
    policy.write_text('daily_usd = "5"\n', encoding="utf-8")
    result = run(*[arg.format(policy=policy) for arg in command], "--store", empty)
    assert_one_line_error(result, EXIT_BAD_INPUT, "--store: is empty")
