"""``tokenbudget report | head``: when the reader leaves before the output ends, the command
stops quietly with the shell's status for a closed pipe (141, as ``yes | head`` gives), not with
a traceback nor the "bad input" code 1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tokenbudget_core.ledger import Ledger
from tokenbudget_core.stores import open_store
from tokenbudget_core.usage import Usage

pytestmark = [
    pytest.mark.usefixtures("isolated"),
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipes"),
]

SCRIPT = Path(sys.executable).with_name("tokenbudget")
CLOSED_PIPE = 128 + 13  # SIGPIPE


def test_report_into_a_reader_that_leaves_early(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = Ledger(open_store(f"sqlite:///{path}"))
    ledger.record(Usage(input_tokens=1_000), model="gpt-4o", user="u")
    ledger.close()
    # Ten years of days: far more than a pipe holds, so the command is still writing.
    process = subprocess.Popen(
        [str(SCRIPT), "report", "--store", f"sqlite:///{path}", "--days", "3660"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert process.stdout is not None
    assert process.stderr is not None
    first = process.stdout.readline()
    process.stdout.close()  # what `head -1` does after its line
    errors = process.stderr.read()
    process.stderr.close()
    assert process.wait(timeout=60) == CLOSED_PIPE, errors
    assert b"Spend" in first
    assert errors == b""
