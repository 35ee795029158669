"""ruff and mypy run as part of the suite, so a lint or type error fails CI."""

from __future__ import annotations

from pathlib import Path

import pytest

import early_tools

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy"],
    ],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_tool_is_clean(command: list[str]) -> None:
    """(mypy was started when the run began, ``tests/conftest.py``: it ran beside the other tests.)"""
    code, output = early_tools.run(command)
    assert code == 0, output[-6000:]


def test_py_typed_is_shipped() -> None:
    for package in ("core/tokenbudget_core", "langchain_tokenbudget", "llamaindex_tokenbudget"):
        assert (ROOT / package / "py.typed").is_file()
