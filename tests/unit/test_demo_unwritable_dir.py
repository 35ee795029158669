"""The demo run in a directory it cannot write (review s22b #4): the error says so, naming the
directory and the way out (a ``--store`` in a writable one, or another directory), instead of a
store "unreachable" at a per-run file the user never asked for with advice (``on_unavailable``)
that means nothing for the demo. The Windows fallback (the file is open in another run, so it
cannot be deleted: this run records to a file of its own) is kept for that case only."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli_support import assert_one_line_error, run
from langchain_tokenbudget.demo_pipeline import DEFAULT_DEMO_STORE, run_demo
from tokenbudget_core.cli import EXIT_BAD_INPUT
from tokenbudget_core.errors import InvalidInputError

pytestmark = pytest.mark.usefixtures("isolated")

SIZE: dict[str, Any] = {"users": 1, "turns": 1, "seed": 5}


def _writable(folder: Path) -> bool:
    probe = folder / ".probe"
    try:
        probe.touch()
    except OSError:
        return False
    probe.unlink()
    return True


@contextlib.contextmanager
def _read_only(folder: Path) -> Iterator[None]:
    """``folder`` read-only: its mode, and for root (whom modes do not stop) the immutable flag."""
    if sys.platform == "win32":
        pytest.skip("a read-only directory on Windows is another case (no POSIX modes)")
    folder.chmod(0o555)
    immutable = False
    try:
        if _writable(folder) and os.geteuid() == 0 and shutil.which("chattr"):
            immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
        if _writable(folder):
            pytest.skip("cannot make a read-only directory here")
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def _assert_names_the_directory(message: str, folder: Path) -> None:
    assert str(folder.resolve()) in message or str(folder) in message, message
    assert "not writable" in message, message
    assert "--store sqlite:///" in message, message
    assert "-run-" not in message, message  # no file the user never asked for
    assert "on_unavailable" not in message, message
    assert "unreachable" not in message, message


@pytest.mark.parametrize("earlier_run", [True, False], ids=["file-of-an-earlier-run", "no-file"])
def test_a_read_only_directory_is_named_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, earlier_run: bool
) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    monkeypatch.chdir(folder)
    if earlier_run:
        assert run_demo(**SIZE).store == DEFAULT_DEMO_STORE
    before = sorted(p.name for p in folder.iterdir())
    with _read_only(folder), pytest.raises(InvalidInputError) as caught:
        run_demo(**SIZE)
    assert caught.value.field == "store"
    _assert_names_the_directory(str(caught.value), folder)
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing left behind, nothing deleted


def test_the_cli_names_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    monkeypatch.chdir(folder)
    assert run("demo", "--users", "1", "--turns", "1", "--no-progress", "--html", "-").exit_code == 0
    with _read_only(folder):
        result = run("demo", "--users", "1", "--turns", "1", "--no-progress", "--html", "-")
    assert_one_line_error(result, EXIT_BAD_INPUT, "store:")
    _assert_names_the_directory(result.stderr, folder)


def test_a_file_open_in_another_run_on_windows_still_gets_a_file_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the fallback is for: Windows refuses to delete a file another process has open
    (``WinError 32``); the run records to a new file beside it and leaves the other run's alone."""
    monkeypatch.chdir(tmp_path)
    assert run_demo(**SIZE).store == DEFAULT_DEMO_STORE
    held = (tmp_path / "tokenbudget-demo.db").read_bytes()
    unlink = Path.unlink

    def windows_unlink(self: Path, missing_ok: bool = False) -> None:
        if self.name.startswith("tokenbudget-demo.db"):
            error = PermissionError(errno.EACCES, "The process cannot access the file", str(self))
            error.winerror = 32  # type: ignore[attr-defined]  # as Windows sets it
            raise error
        unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", windows_unlink)
    summary = run_demo(**SIZE)
    assert summary.store.startswith("sqlite:///tokenbudget-demo-run-"), summary.store
    assert (tmp_path / "tokenbudget-demo.db").read_bytes() == held
    assert (tmp_path / summary.store.removeprefix("sqlite:///")).exists()


def test_a_permission_error_that_is_not_windows_in_use_is_not_a_file_in_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same refusal without Windows' "in use" code (a directory the user may not write, on any
    system) is reported as such, not answered with a per-run file."""
    monkeypatch.chdir(tmp_path)
    run_demo(**SIZE)
    unlink = Path.unlink

    def refused(self: Path, missing_ok: bool = False) -> None:
        if self.name == "tokenbudget-demo.db":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", refused)
    with pytest.raises(InvalidInputError) as caught:
        run_demo(**SIZE)
    _assert_names_the_directory(str(caught.value), tmp_path)
    assert not list(tmp_path.glob("tokenbudget-demo-run-*"))


@pytest.mark.parametrize("earlier_run", [True, False], ids=["files-of-an-earlier-run", "no-files"])
def test_the_cli_with_its_defaults_names_the_directory_and_the_way_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, earlier_run: bool
) -> None:
    """Flags left to their defaults: whether the default report ``tokenbudget-demo.html`` is there
    from an earlier run or not, the error names the directory, and ``--store`` to leave it."""
    folder = tmp_path / "ro"
    folder.mkdir()
    monkeypatch.chdir(folder)
    if earlier_run:
        assert run("demo", "--users", "1", "--turns", "1", "--no-progress").exit_code == 0
    with _read_only(folder):
        result = run("demo", "--users", "1", "--turns", "1", "--no-progress")
    assert_one_line_error(result, EXIT_BAD_INPUT)
    _assert_names_the_directory(result.stderr, folder)


def test_the_cli_does_not_suggest_a_store_it_was_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    monkeypatch.chdir(folder)
    db = tmp_path / "elsewhere.db"
    with _read_only(folder):
        result = run("demo", "--users", "1", "--turns", "1", "--no-progress", "--store", f"sqlite:///{db}")
    assert_one_line_error(result, EXIT_BAD_INPUT, "--html", str(folder), "not writable", "--html PATH")
    assert "--store" not in result.stderr
    assert not db.exists()  # refused before the run
