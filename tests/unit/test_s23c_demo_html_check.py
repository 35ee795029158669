"""``tokenbudget demo`` checks, before its long run, that its HTML report can be written, and the
check never removes the report file (review s23 #9): it used to create the default
``tokenbudget-demo.html`` to find out, then delete it, so a report another demo run in the
directory wrote in that instant was deleted. A file of a unique name beside it is made instead.

The instant is hit without timing: an audit hook (``sys.addaudithook``, in a process of its own)
writes the other run's report as the check opens its first file for writing in the directory."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cli_support import assert_one_line_error, run

pytestmark = pytest.mark.usefixtures("isolated")

_CHECK_DURING_ANOTHER_RUNS_WRITE = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path

    from tokenbudget_core.cli import _check_writable

    here = Path.cwd()
    report = here / "tokenbudget-demo.html"
    written = []

    def other_run_writes_its_report(event, args):
        # the first file opened for writing in this directory: the other run writes its report now
        if event != "open" or written or args[0] is None or not isinstance(args[0], (str, bytes)):
            return
        path = Path(os.fsdecode(args[0]))
        writing = (args[1] is not None and "r" not in args[1]) or (args[1] is None and args[2] & 3)
        if (here / path).parent.resolve() == here.resolve() and writing:
            written.append(path.name)
            report.write_text("the other run's report")

    sys.addaudithook(other_run_writes_its_report)
    _check_writable("--html", "tokenbudget-demo.html", default=True)
    print(written, report.read_text() if report.exists() else "GONE")
    """
)


def test_the_check_never_removes_a_report_another_run_writes_meanwhile(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CHECK_DURING_ANOTHER_RUNS_WRITE],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    written, _, content = done.stdout.strip().partition("] ")
    assert written != "[", "the check opened no file for writing"
    assert content == "the other run's report"
    assert (tmp_path / "tokenbudget-demo.html").read_text() == "the other run's report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenbudget-demo.html"]  # no probe left


def test_the_check_leaves_an_existing_report_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tokenbudget_core.cli import _check_writable

    monkeypatch.chdir(tmp_path)
    report = tmp_path / "tokenbudget-demo.html"
    report.write_text("an earlier run's report")
    _check_writable("--html", "tokenbudget-demo.html", default=True)
    assert report.read_text() == "an earlier run's report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenbudget-demo.html"]


def test_the_check_makes_nothing_where_no_report_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tokenbudget_core.cli import _check_writable

    monkeypatch.chdir(tmp_path)
    _check_writable("--html", "tokenbudget-demo.html", default=True)
    _check_writable("--html", str(tmp_path / "sub-report.html"))
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_report_is_still_refused_before_the_run(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder" / "report.html"
    result = run("demo", "--users", "1", "--turns", "1", "--no-progress", "--html", str(missing))
    assert_one_line_error(result, 1, "--html", "No such file or directory")
    result = run("demo", "--users", "1", "--turns", "1", "--no-progress", "--html", str(tmp_path))
    assert_one_line_error(result, 1, "--html", str(tmp_path))
    assert not (tmp_path / "no-such-folder").exists()
