"""ruff and mypy run as part of the suite, so a lint or type error fails CI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


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
    exe = BIN / command[0]
    out = subprocess.run([str(exe), *command[1:]], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_py_typed_is_shipped() -> None:
    for package in ("core/tokenbudget_core", "langchain_tokenbudget", "llamaindex_tokenbudget"):
        assert (ROOT / package / "py.typed").is_file()
