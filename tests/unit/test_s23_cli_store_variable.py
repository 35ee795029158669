"""``$TOKENBUDGET_STORE`` set to an empty or blank string is refused, naming the variable and the
way out (unset it, or give it a URL), by ``open_store()``, ``Ledger()`` and every CLI command that
reads it: it was read as unset (an empty one), so an app or ``tokenbudget report`` silently used a
private ``./tokenbudget.db``, or blamed on ``store`` (a blank one), an argument nobody passed."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_support import assert_one_line_error, run
from tokenbudget_core import stores
from tokenbudget_core.cli import EXIT_BAD_INPUT
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.stores import DEFAULT_STORE_URL, open_store
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")

EMPTY = pytest.mark.parametrize("value", ["", "   "], ids=["empty", "blank"])


@pytest.fixture
def default_ledger_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ledger at ./tokenbudget.db (the fallback store), with a call on it."""
    monkeypatch.chdir(tmp_path)
    ledger = Ledger(DEFAULT_STORE_URL, alerts=[])
    ledger.record(Usage(input_tokens=10, output_tokens=5), model="gpt-4o-mini", feature="chat")
    ledger.close()


def _names_the_variable(error: InvalidInputError, value: str) -> None:
    assert error.field == "$TOKENBUDGET_STORE"
    assert error.value == value
    assert error.fix is not None
    assert "unset it" in error.fix
    assert "sqlite:///" in error.fix
    assert str(error).startswith("$TOKENBUDGET_STORE: is set but ")


@EMPTY
@pytest.mark.usefixtures("default_ledger_here")
def test_open_store_and_ledger_refuse_an_empty_variable(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENBUDGET_STORE", value)
    for opening in (open_store, Ledger):
        with pytest.raises(InvalidInputError) as caught:
            opening()
        _names_the_variable(caught.value, value)


def test_an_unset_variable_is_the_default_and_a_set_one_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert stores.default_store_url() == DEFAULT_STORE_URL
    monkeypatch.setenv("TOKENBUDGET_STORE", "memory://")
    assert stores.default_store_url() == "memory://"
    store = open_store()
    store.close()


@EMPTY
@pytest.mark.usefixtures("default_ledger_here")
@pytest.mark.parametrize(
    "command",
    [("report",), ("budgets", "--policy", "budgets.toml"), ("report", "--namespace", "prod")],
    ids=["report", "budgets", "namespace"],
)
def test_cli_refuses_an_empty_variable_naming_it(
    command: tuple[str, ...], value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    Path("budgets.toml").write_text('daily_usd = "5"\n', encoding="utf-8")
    monkeypatch.setenv("TOKENBUDGET_STORE", value)
    result = run(*command)
    assert_one_line_error(result, EXIT_BAD_INPUT, "$TOKENBUDGET_STORE: is set but ", "unset it")


@pytest.mark.usefixtures("default_ledger_here")
def test_a_store_flag_wins_over_an_empty_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENBUDGET_STORE", "")
    result = run("report", "--store", DEFAULT_STORE_URL, "--json")
    assert result.exit_code == 0, result.output
