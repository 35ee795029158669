"""Slow checker tools started as soon as pytest knows it will run their test, so they run beside
the other tests (on another core) instead of after them: mypy over the whole tree takes about a
minute from a fresh clone. ``tests/conftest.py`` starts them; ``test_quality.py`` reads them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

_started: dict[tuple[str, ...], tuple[subprocess.Popen[bytes], IO[bytes]]] = {}


def start(command: list[str]) -> None:
    """Start ``command`` (a tool of this virtualenv, run at the project root) in the background,
    at a lower priority than the tests, its output kept in a temporary file."""
    key = tuple(command)
    if key in _started:
        return
    out = tempfile.TemporaryFile()  # noqa: SIM115 - read and closed by run(), after the tool ends
    nice = shutil.which("nice")
    process = subprocess.Popen(
        [*([nice, "-n", "10"] if nice else []), str(BIN / command[0]), *command[1:]],
        cwd=ROOT,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    _started[key] = (process, out)


def run(command: list[str], timeout: float = 300) -> tuple[int, str]:
    """``command``'s exit code and output: of the run :func:`start` began, else of a run now."""
    started = _started.pop(tuple(command), None)
    if started is None:
        done = subprocess.run(
            [str(BIN / command[0]), *command[1:]], cwd=ROOT, capture_output=True, text=True, timeout=timeout
        )
        return done.returncode, done.stdout + done.stderr
    process, out = started
    try:
        code = process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    out.seek(0)
    text = out.read().decode(errors="replace")
    out.close()
    return code, text
