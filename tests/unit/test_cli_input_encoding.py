"""``count`` and ``truncate`` read FILE and stdin the same way: the same bytes give the same
answer (or the same one-line error naming the input and the fix), in process and as the
installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cli_support import assert_one_line_error
from tokenbudget_core.cli import EXIT_BAD_INPUT, cli
from tokenbudget_core.counting import TokenCounter

pytestmark = pytest.mark.usefixtures("isolated")

LATIN1 = "café olé, naïve façade\n".encode("latin-1")
SCRIPT = Path(sys.executable).with_name("tokenbudget")


def run(*args: str, stdin: bytes | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=stdin)


def script(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "TOKENBUDGET_PRICES")}
    return subprocess.run(
        [str(SCRIPT), *args], input=stdin, capture_output=True, timeout=120, env=env | {"LC_ALL": "C.UTF-8"}
    )


def _file(tmp_path: Path, data: bytes) -> str:
    path = tmp_path / "input.txt"
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("command", [("count",), ("truncate", "-n", "3")])
def test_bytes_that_are_not_utf8_are_refused_alike_from_a_file_and_from_stdin(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    path = _file(tmp_path, LATIN1)
    from_file = run(*command, path)
    assert_one_line_error(from_file, EXIT_BAD_INPUT, path, "not UTF-8", "0xe9 at offset 3", "--encoding")
    from_stdin = run(*command, stdin=LATIN1)
    assert_one_line_error(from_stdin, EXIT_BAD_INPUT, "stdin", "not UTF-8", "0xe9 at offset 3", "--encoding")


@pytest.mark.parametrize("command", [("count",), ("truncate", "-n", "3")])
def test_the_console_script_refuses_them_alike_too(tmp_path: Path, command: tuple[str, ...]) -> None:
    # A real stdin decodes with surrogateescape: the bytes used to be counted as U+FFFD silently.
    path = _file(tmp_path, LATIN1)
    for proc, needle in ((script(*command, path), path), (script(*command, "-", stdin=LATIN1), "stdin")):
        assert proc.returncode == EXIT_BAD_INPUT, proc.stderr
        assert proc.stdout == b""
        err = proc.stderr.decode()
        assert err.startswith("error: ")
        assert err.count("\n") == 1, err
        assert needle in err
        assert "not UTF-8" in err
        assert "--encoding" in err


def test_encoding_reads_either_input_in_that_encoding(tmp_path: Path) -> None:
    expected = TokenCounter.for_model("gpt-4o").count(LATIN1.decode("latin-1"))
    from_file = run("count", "--encoding", "latin-1", _file(tmp_path, LATIN1))
    from_stdin = run("count", "--encoding", "latin-1", stdin=LATIN1)
    assert from_file.exit_code == 0, from_file.output
    assert from_file.stdout == from_stdin.stdout == f"{int(expected)}\n"
    cut = run("truncate", "-n", "100", "--encoding", "latin-1", "--json", stdin=LATIN1)
    assert json.loads(cut.stdout)["text"] == LATIN1.decode("latin-1")


def test_an_unknown_encoding_is_a_one_line_error() -> None:
    for name in ("klingon", "rot13"):  # rot13 is a codec, but not a text encoding
        assert_one_line_error(
            run("count", "--encoding", name, stdin=b"hi"), EXIT_BAD_INPUT, "--encoding", name
        )


def test_line_endings_are_read_as_they_are_from_a_file_and_from_stdin(tmp_path: Path) -> None:
    data = b"first line\r\nsecond line\rthird line\n"
    path = _file(tmp_path, data)
    answers = {
        json.loads(proc.stdout)["text"]
        for proc in (
            script("truncate", "-n", "100", "--json", path),
            script("truncate", "-n", "100", "--json", "-", stdin=data),
        )
    }
    assert answers == {data.decode()}
    counts = {script("count", path).stdout, script("count", "-", stdin=data).stdout}
    assert counts == {f"{int(TokenCounter.for_model('gpt-4o').count(data.decode()))}\n".encode()}


# -- a UTF-8 byte order mark ---------------------------------------------------------------------

MESSAGES = b'[{"role": "user", "content": "Hello"}]'
BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize("input_format", ["auto", "messages"])
def test_a_utf8_bom_is_not_counted_from_a_file_or_stdin(tmp_path: Path, input_format: str) -> None:
    plain = run("count", "--format", input_format, "--json", _file(tmp_path, MESSAGES))
    assert plain.exit_code == 0, plain.output
    assert json.loads(plain.stdout)["kind"] == "messages"
    path = tmp_path / "bom.json"
    path.write_bytes(BOM + MESSAGES)
    from_file = run("count", "--format", input_format, "--json", str(path))
    from_stdin = run("count", "--format", input_format, "--json", stdin=BOM + MESSAGES)
    assert from_file.exit_code == 0, from_file.output
    assert from_file.stdout == from_stdin.stdout == plain.stdout


def test_the_console_script_leaves_a_utf8_bom_out_too(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(BOM + MESSAGES)
    plain = script("count", _file(tmp_path, MESSAGES))
    for proc in (script("count", str(path)), script("count", "-", stdin=BOM + MESSAGES)):
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == plain.stdout


def test_after_a_bom_a_bad_byte_is_named_at_its_offset_in_the_input(tmp_path: Path) -> None:
    text = run("truncate", "-n", "100", "--json", stdin=BOM + "café".encode())
    assert json.loads(text.stdout)["text"] == "café"  # the mark is not text, truncated or not
    bad = run("count", _file(tmp_path, BOM + LATIN1))
    assert_one_line_error(bad, EXIT_BAD_INPUT, "not UTF-8", "0xe9 at offset 6")


def test_another_encoding_keeps_what_it_decodes(tmp_path: Path) -> None:
    cut = run("truncate", "-n", "100", "--encoding", "latin-1", "--json", stdin=BOM + b"abc")
    assert json.loads(cut.stdout)["text"] == (BOM + b"abc").decode("latin-1")
