"""``$TOKENBUDGET_SPOOL`` set but empty or blank is refused, naming the variable, as
``$TOKENBUDGET_STORE`` is: it was read as unset, so a deployment that meant to name its spool
(``TOKENBUDGET_SPOOL=$SPOOL_FILE`` with that one unset) spooled somewhere else without a word.
``spool_path=""`` is refused too (it also fell through to the variable or the default)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.usage import Usage


@pytest.mark.parametrize("value", ["", "   ", "\t\n"])
def test_an_empty_or_blank_variable_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    monkeypatch.setenv("TOKENBUDGET_SPOOL", value)
    with pytest.raises(InvalidInputError) as caught:
        Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    assert caught.value.field == "$TOKENBUDGET_SPOOL"
    assert "unset it" in str(caught.value)
    # a memory ledger never spools: it does not read the variable (review s23 #5)
    Ledger("memory://").record(Usage(input_tokens=1, output_tokens=1), model="gpt-4o-mini")


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_spool_path_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str) -> None:
    monkeypatch.setenv("TOKENBUDGET_SPOOL", str(tmp_path / "from-env"))
    with pytest.raises(InvalidInputError) as caught:
        Ledger("memory://", spool_path=value)
    assert caught.value.field == "spool_path"


def test_the_variable_names_the_spool_and_unset_means_the_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv("TOKENBUDGET_SPOOL", str(tmp_path / "named"))
    assert Ledger(url).spool.path == tmp_path / "named"
    assert Ledger(url, spool_path=tmp_path / "given").spool.path == tmp_path / "given"
    monkeypatch.delenv("TOKENBUDGET_SPOOL")
    assert Ledger(url).spool.path not in (tmp_path / "named", tmp_path / "given")
