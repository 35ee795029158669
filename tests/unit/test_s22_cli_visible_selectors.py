"""Variation selectors and the other marks that show nothing after a letter are escaped by
``visible()``, so two user ids that differ only by one never print as the same ``alice`` (in
``tokenbudget report --by user``, in alert log lines). Review s22 #3."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_support import run
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.usage import Usage
from tokenbudget_core.visible import visible

pytestmark = pytest.mark.usefixtures("isolated")

INVISIBLE = [
    *map(chr, range(0xFE00, 0xFE10)),
    *map(chr, range(0xE0100, 0xE01F0)),
    "\u17b4",
    "\u17b5",
    "\u180b",
    "\u180c",
    "\u180d",
    "\u180f",
]


@pytest.mark.parametrize("mark", INVISIBLE, ids=lambda c: f"U+{ord(c):04X}")
def test_an_invisible_mark_is_shown_as_an_escape(mark: str) -> None:
    code = ord(mark)
    escape = f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
    assert visible(f"alice{mark}") == f"alice{escape}"


def test_an_escape_beyond_the_basic_plane_is_not_read_as_a_shorter_one() -> None:
    assert visible("x\U000e0001") == "x\\U000e0001"  # not "\ue0001", which reads as U+E000 then "1"


def test_two_users_apart_by_a_variation_selector_print_apart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(url)
    ledger.record(Usage(input_tokens=1_000, output_tokens=0), model="gpt-4o", user="alice")
    ledger.record(Usage(input_tokens=400_000, output_tokens=0), model="gpt-4o", user="alice\ufe0f")
    ledger.close()

    result = run("report", "--store", url, "--by", "user", "--days", "1")

    assert result.exit_code == 0, result.output
    assert "\ufe0f" not in result.stdout
    assert "alice\\ufe0f" in result.stdout
