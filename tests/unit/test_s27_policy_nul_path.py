"""``load_policy()`` given a path holding a NUL byte raises ``InvalidInputError`` naming
``policy_file``, as for any other path that cannot be read; never a bare ``ValueError``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenbudget_core.budgets import load_policy
from tokenbudget_core.errors import InvalidInputError


@pytest.mark.parametrize("path", ["budgets\x00.toml", Path("dir\x00/budgets.toml")])
def test_a_path_with_a_nul_byte_is_invalid_input(path: str | Path) -> None:
    with pytest.raises(InvalidInputError) as info:
        load_policy(path)
    assert info.value.field == "policy_file"
    assert "cannot read" in str(info.value)
    assert "\\x00" in str(info.value)  # shown escaped, not as a raw NUL


def test_a_readable_path_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "budgets.toml"
    path.write_text('daily_usd = "10"\n', encoding="utf-8")
    assert load_policy(path).daily_usd == 10
