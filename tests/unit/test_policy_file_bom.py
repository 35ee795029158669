"""A budgets.toml saved with a UTF-8 byte-order mark (Windows Notepad, PowerShell's
``Out-File -Encoding utf8``) loads like the same file without one."""

from __future__ import annotations

import codecs
from decimal import Decimal
from pathlib import Path

import pytest

from tokenbudget_core.budgets import load_policy
from tokenbudget_core.errors import InvalidInputError

POLICY = 'daily_usd = "5"\n\n[features."support-é"]\nuser_daily_tokens = 1000\n'


def test_a_bom_is_skipped(tmp_path: Path) -> None:
    plain, with_bom = tmp_path / "plain.toml", tmp_path / "bom.toml"
    plain.write_bytes(POLICY.encode("utf-8"))
    with_bom.write_bytes(codecs.BOM_UTF8 + POLICY.encode("utf-8"))
    policy = load_policy(with_bom)
    assert policy == load_policy(plain)
    assert policy.daily_usd == Decimal(5)
    assert policy.feature("support-é").user_daily_tokens == 1000


def test_an_error_after_a_bom_names_the_same_place(tmp_path: Path) -> None:
    broken = "daily_usd = \n"
    plain, with_bom = tmp_path / "plain.toml", tmp_path / "bom.toml"
    plain.write_bytes(broken.encode("utf-8"))
    with_bom.write_bytes(codecs.BOM_UTF8 + broken.encode("utf-8"))
    with pytest.raises(InvalidInputError) as from_plain:
        load_policy(plain)
    with pytest.raises(InvalidInputError) as from_bom:
        load_policy(with_bom)
    assert from_bom.value.problem.replace(str(with_bom), "FILE") == from_plain.value.problem.replace(
        str(plain), "FILE"
    )
