"""A demo run where no lock of the directory can be taken at all (Windows, a file system without
locks, a directory that cannot be opened read-only) is not told that another demo run was going
(review s23 #7): it used to read "no lock" as "another run holds it", so every run there used
``tokenbudget-demo-run-<id>`` files, said another run was going when none was, and left those
files behind. It now uses the default files and says that runs at once are not kept apart there.

On Linux the case is a directory this user may write but not read (mode 0333), where the lock's
``open(dir, O_RDONLY)`` fails: run as another user (``nobody``, by ``setpriv``) when the tests run
as root, who reads any directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_support import run

pytest.importorskip("langchain_core")
pytestmark = [
    pytest.mark.usefixtures("isolated"),
    pytest.mark.skipif(sys.platform == "win32" or not hasattr(os, "geteuid"), reason="POSIX permissions"),
]

SMALL = ("--users", "2", "--turns", "2", "--no-progress")
ANOTHER_RUN = "another demo run was going"
NO_LOCK = "note: no demo lock can be taken in this directory"
NOBODY = 65534


@pytest.fixture
def unreadable_dir() -> Iterator[Path]:
    """A directory the demo's process may write in but not read (so not lock)."""
    folder = Path(tempfile.mkdtemp(prefix="tb-no-lock-"))  # where another user can reach it
    try:
        if os.geteuid() == 0 and shutil.which("setpriv") is None:
            pytest.skip("root reads any directory, and setpriv is not here to run as another user")
        folder.chmod(0o333)
        yield folder
    finally:
        folder.chmod(0o700)
        shutil.rmtree(folder)


def _demo_in(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``tokenbudget demo <args>`` in ``folder``, in a process of its own (as ``nobody`` when root)."""
    env = {**os.environ, "TOKENBUDGET_SPOOL": str(folder / "spool.jsonl"), "HOME": str(folder)}
    as_other = (
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"] if os.geteuid() == 0 else []
    )
    done = subprocess.run(
        [
            *as_other,
            sys.executable,
            "-c",
            "from tokenbudget_core.cli import cli; cli()",
            "demo",
            *SMALL,
            *args,
        ],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return done


def _files(folder: Path) -> list[str]:
    folder.chmod(0o700)
    try:
        return sorted(p.name for p in folder.iterdir())
    finally:
        folder.chmod(0o333)


def test_no_lock_is_not_another_run_going(unreadable_dir: Path) -> None:
    for _ in range(2):  # a run after another (none at once): neither says another run was going
        out = _demo_in(unreadable_dir).stdout
        assert ANOTHER_RUN not in out
        assert "ledger: sqlite:///tokenbudget-demo.db " in out
        assert "HTML report: tokenbudget-demo.html" in out
        (note,) = [ln for ln in out.splitlines() if ln.startswith(NO_LOCK)]
        assert "not kept apart" in note
        assert "--store and --html" in note
    assert _files(unreadable_dir) == ["tokenbudget-demo.db", "tokenbudget-demo.html"]  # none kept behind


def test_json_says_no_lock(unreadable_dir: Path) -> None:
    shown = json.loads(_demo_in(unreadable_dir, "--json").stdout)
    assert shown["no_lock"] is True
    assert shown["own_files"] == []
    assert shown["store"] == "sqlite:///tokenbudget-demo.db"
    assert shown["html"] == "tokenbudget-demo.html"
    # an explicit store with the default report needs the lock too: the default report, no own files
    shown = json.loads(_demo_in(unreadable_dir, "--json", "--store", "sqlite:///app.db").stdout)
    assert shown["no_lock"] is True
    assert shown["own_files"] == []
    assert shown["html"] == "tokenbudget-demo.html"
    # a run needing no lock (its own --store and --html) has nothing to say
    out = _demo_in(unreadable_dir, "--store", "sqlite:///app.db", "--html", "mine.html").stdout
    assert NO_LOCK not in out
    assert ANOTHER_RUN not in out


def test_a_run_where_the_lock_can_be_taken_has_no_such_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("demo", *SMALL)
    assert result.exit_code == 0, result.output
    assert NO_LOCK not in result.stdout
    shown = json.loads(run("demo", *SMALL, "--json").stdout)
    assert shown["no_lock"] is False
