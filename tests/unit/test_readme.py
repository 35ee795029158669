"""The README's quickstarts run as written, and its two commands are what CI runs."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.DOTALL)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_block_runs(code: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    # A line commented "# -> value" must print exactly that value (a parenthesised note may follow).
    printed = out.getvalue().splitlines()
    expected = [
        re.sub(r"\s*\(.*\)$", "", m.group(1)).strip()
        for line in code.splitlines()
        if (m := re.match(r"^\s*print\(.*\)\s+# -> (.*)$", line))
    ]
    assert expected or "->" not in code
    for want in expected:
        assert want in printed, (want, printed)


def test_exactly_two_commands_and_ci_runs_the_test_one() -> None:
    commands = re.findall(r"^(python3\.11 -m venv .*)$", README, re.MULTILINE)
    assert len(commands) == 2
    assert commands[0].endswith("tokenbudget demo")
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci
