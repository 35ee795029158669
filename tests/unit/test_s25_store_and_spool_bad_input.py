"""Bad input to a store's ``rollup`` and to ``Spool`` is a named error.

``store.rollup("2026-11-24")`` (the brackets of the README's ``rollup([ledger.day()])``
forgotten) looked up one day per character on every store and silently reported nothing;
``Spool(None)``, ``Spool(5)`` and ``spool.replay(store, most="10")`` raised bare ``TypeError``s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.spool import Spool
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")


@pytest.fixture(params=["memory", "sqlite", "redis"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "redis":
        url = str(request.getfixturevalue("clean_redis_url"))
    else:
        url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'l.db'}"
    ledger = Ledger(url)
    ledger.record(Usage(input_tokens=10, output_tokens=5), model="gpt-4o")
    yield ledger
    ledger.close()


def test_rollup_of_a_day_string_is_refused_naming_days(ledger: Ledger) -> None:
    assert len(ledger.store.rollup([ledger.day()])) == 1  # (what the caller meant)
    with pytest.raises(InvalidInputError) as e:
        ledger.store.rollup(ledger.day())
    assert e.value.field == "days"
    assert "rollup([" in str(e.value)


def test_rollup_of_a_non_string_day_is_refused_naming_it(ledger: Ledger) -> None:
    with pytest.raises(InvalidInputError) as e:
        ledger.store.rollup([ledger.day(), 20261124])  # type: ignore[list-item]
    assert e.value.field == "days[1]"


@pytest.mark.parametrize("path", [None, 5, ""])
def test_a_spool_path_that_is_not_a_path_is_refused_naming_path(path: object) -> None:
    with pytest.raises(InvalidInputError) as e:
        Spool(path)  # type: ignore[arg-type]
    assert e.value.field == "path"


@pytest.mark.parametrize("most", ["10", 0, -1, True, 2.5])
def test_a_replay_limit_that_is_not_a_positive_int_is_refused_naming_most(
    tmp_path: Path, most: object
) -> None:
    spool = Spool(tmp_path / "spool.jsonl")
    with pytest.raises(InvalidInputError) as e:
        spool.replay(Ledger("memory://").store, most=most)  # type: ignore[arg-type]
    assert e.value.field == "most"
