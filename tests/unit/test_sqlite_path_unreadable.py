"""A SQLite ledger whose path can no longer be stat'ed (the process dropped the privileges it
opened the file with, or a deploy tightened its directory) keeps working on the file it has
open: that is not a file deleted or replaced, so nothing is reopened, refused or spooled."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from tokenbudget_core.budgets import BudgetPolicy
    from tokenbudget_core.ledger import Ledger
    from tokenbudget_core.usage import Usage

    private, spool = sys.argv[1], sys.argv[2]
    ledger = Ledger(f"sqlite:///{private}/ledger.db", policy=BudgetPolicy(daily_usd="50"),
                    spool_path=f"{spool}/s.jsonl")
    ledger.record(Usage(input_tokens=1000), model="gpt-4o-mini", feature="f")
    if os.geteuid() == 0:
        os.setgid(65534)
        os.setuid(65534)  # as daemons do after opening their files
    else:
        os.chmod(private, 0)
    try:
        os.stat(f"{private}/ledger.db")
        print("stat-works")  # the setup did not take: nothing to show
        sys.exit(0)
    except PermissionError:
        pass
    for i in range(3):
        r = ledger.reserve(model="gpt-4o-mini", input_tokens=1000, max_output_tokens=10, feature="f")
        c = ledger.commit(r, Usage(input_tokens=1000, output_tokens=10))
        print("call", c.applied, c.spooled)
        time.sleep(0.6)  # past the once-a-second check
    print("used", ledger.state(feature="f").used["daily_usd"])
    print("spooled", os.path.exists(f"{spool}/s.jsonl") and os.path.getsize(f"{spool}/s.jsonl") > 0)
    """
)


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX permissions")
def test_a_path_that_cannot_be_stated_is_not_a_moved_file(tmp_path: Path) -> None:
    private, spool = tmp_path / "private", tmp_path / "spool"
    private.mkdir(mode=0o700)
    spool.mkdir()
    spool.chmod(0o777)
    tmp_path.chmod(0o755)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{root / 'core'}", "TOKENBUDGET_STORE": ""}
    try:
        out = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(private), str(spool)],
            capture_output=True, text=True, timeout=60, env=env, check=False,
        )  # fmt: skip
    finally:
        private.chmod(0o700)
    assert out.returncode == 0, out.stderr
    if "stat-works" in out.stdout:
        pytest.skip("this process cannot lose access to its own directory here")
    lines = out.stdout.split("\n")
    assert lines.count("call True False") == 3, out.stdout + out.stderr  # applied, never spooled
    assert "spooled False" in lines
    assert "deleted or replaced" not in out.stderr
