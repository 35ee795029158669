"""Streams that fail the CLI: a stdout that cannot be written (a full disk: ``> /dev/full``), a
closed stdin (``<&-``), an ``--encoding`` whose codec decodes no text. Each is one ``error:``
line with a documented exit code, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cli_support import assert_one_line_error, run
from tokenbudget_core.cli import EXIT_BAD_INPUT, EXIT_UNAVAILABLE
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")

SCRIPT = Path(sys.executable).with_name("tokenbudget")
FULL = Path("/dev/full")


def _one_error_line(stderr: bytes) -> str:
    lines = stderr.decode().splitlines()
    assert len(lines) == 1, stderr.decode()
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.skipif(not FULL.exists(), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize(
    "args",
    [
        ("count", "{text}"),
        ("truncate", "-n", "1", "{text}"),
        ("cost", "-m", "gpt-4o", "--input", "1", "--output", "1"),  # a rich table
        ("explain",),
        ("report", "--store", "{store}", "--days", "3"),
        ("count", "--help"),
    ],
    ids=lambda args: " ".join(args[:2]),
)
def test_a_full_disk_on_stdout_is_one_line_and_exit_4(tmp_path: Path, args: tuple[str, ...]) -> None:
    text = tmp_path / "plain.txt"
    text.write_text("hello world", encoding="utf-8")
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.record(Usage(input_tokens=1_000), model="gpt-4o", user="u")
    ledger.close()
    argv = [a.format(text=text, store=f"sqlite:///{tmp_path / 'ledger.db'}") for a in args]
    with FULL.open("wb") as full:
        done = subprocess.run([str(SCRIPT), *argv], stdout=full, stderr=subprocess.PIPE, check=False)
    assert done.returncode == EXIT_UNAVAILABLE, done.stderr.decode()
    line = _one_error_line(done.stderr)
    assert line == "error: cannot write the output to stdout: No space left on device"


def test_exit_4_documents_an_unwritable_stdout() -> None:
    help_text = " ".join(run("--help").stdout.split())
    assert "stdout, when it cannot be written" in help_text


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX shell")
@pytest.mark.parametrize("command", ["count", "truncate -n 5"])
def test_a_closed_stdin_is_named(command: str) -> None:
    done = subprocess.run(["sh", "-c", f'"$0" {command} <&-', str(SCRIPT)], capture_output=True, check=False)
    assert done.returncode == EXIT_BAD_INPUT, done.stderr.decode()
    line = _one_error_line(done.stderr)
    assert line.startswith("error: stdin: is closed")
    assert "pass FILE" in line


@pytest.mark.parametrize("command", [("count",), ("truncate", "-n", "3")])
@pytest.mark.parametrize("encoding", ["undefined", "punycode"])
def test_a_codec_that_decodes_no_text_is_an_encoding_error(command: tuple[str, ...], encoding: str) -> None:
    result = run(*command, "--encoding", encoding, stdin="hello")
    assert_one_line_error(result, EXIT_BAD_INPUT, "--encoding", repr(encoding), "is not a text encoding")


def test_a_bare_unicode_error_while_decoding_names_the_input(tmp_path: Path) -> None:
    # idna decodes host names: a label that is not valid punycode is a bare UnicodeError
    result = run("count", "--encoding", "idna", stdin="xn--zz.com")
    assert_one_line_error(result, EXIT_BAD_INPUT, "stdin", "is not idna text", "--encoding")
    path = tmp_path / "host.txt"
    path.write_bytes(b"xn--zz.com")
    result = run("truncate", "-n", "3", "--encoding", "idna", str(path))
    assert_one_line_error(result, EXIT_BAD_INPUT, "FILE", "host.txt", "is not idna text")
    assert run("count", "--encoding", "idna", stdin="example.com").stdout.strip().isdigit()  # valid: counted
