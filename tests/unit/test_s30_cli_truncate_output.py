"""``tokenbudget truncate`` writes the text exactly as cut: no line end added (``> OUT`` holds at
most --max-tokens tokens, a text within budget comes out byte for byte), and a Claude model's
estimated counts are flagged as ``count`` flags them (``"exact": false`` and a note on stderr)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_support import run
from tokenbudget_core.counting import TokenCounter

pytestmark = pytest.mark.usefixtures("isolated")

SCRIPT = Path(sys.executable).with_name("tokenbudget")
NO_NEWLINE = "alpha beta gamma delta epsilon zeta"  # 7 tokens; a "\n" after 4 of them is a 5th
STRATEGIES = ("keep_start", "keep_end", "keep_both", "smart")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_file_written_holds_what_json_reports(tmp_path: Path, strategy: str) -> None:
    source = tmp_path / "doc.txt"
    source.write_bytes(NO_NEWLINE.encode())
    done = run("truncate", "-n", "4", "-s", strategy, str(source))  # stdout not a terminal: `> cut.txt`
    assert done.exit_code == 0, done.stderr
    report = json.loads(run("truncate", "-n", "4", "-s", strategy, "--json", str(source)).stdout)
    written = done.stdout_bytes.decode()
    assert written == report["text"]  # nothing added
    assert TokenCounter.for_model("gpt-4o").count(written) == report["tokens_after"] <= 4


def test_a_text_within_budget_is_written_byte_for_byte(tmp_path: Path) -> None:
    for data in (NO_NEWLINE.encode(), b"two\r\nlines\r\n", b"tail  \n\n", "caf\u00e9 \U0001f600".encode()):
        source = tmp_path / "fits.txt"
        source.write_bytes(data)
        done = run("truncate", "-n", "100", str(source))
        assert done.exit_code == 0, done.stderr
        assert done.stdout_bytes == data


def test_escape_sequences_in_the_text_are_kept_when_piped() -> None:
    text = "\x1b[31mred\x1b[0m plain"
    result = run("truncate", "-n", "100", stdin=text)  # not a terminal: click would strip them
    assert result.exit_code == 0, result.output
    assert result.stdout == text


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX terminals")
def test_on_a_terminal_the_line_is_ended(tmp_path: Path) -> None:
    import pty

    source = tmp_path / "doc.txt"
    source.write_bytes(NO_NEWLINE.encode())
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [str(SCRIPT), "truncate", "-n", "100", str(source)],
            stdout=follower,
            stderr=subprocess.PIPE,
            env={**os.environ, "NO_COLOR": "1"},
            check=False,
        )
        os.close(follower)
        follower = -1
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)
    assert done.returncode == 0, done.stderr
    assert shown == NO_NEWLINE.encode() + b"\r\n"  # the prompt starts on its own line


def test_claude_estimates_are_flagged_like_count() -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 20
    result = run("truncate", "-n", "30", "-m", "claude-sonnet-4-5", "--json", stdin=text)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["exact"] is False
    assert data["method"] == "estimate"
    assert data["truncated"] is True
    assert data["tokens_after"] <= 30
    note = result.stderr.strip()
    assert note.startswith("note: ")
    assert "estimate" in note
    assert len(result.stderr.splitlines()) == 1
    counted = run("count", "-m", "claude-sonnet-4-5", stdin=text)
    assert "is an estimate" in counted.stderr  # the same counter, flagged the same way
    plain = run("truncate", "-n", "30", "-m", "claude-sonnet-4-5", stdin=text)
    assert plain.exit_code == 0
    assert "estimate" in plain.stderr
    assert plain.stdout == data["text"]


def test_exact_counts_say_so_and_print_no_note() -> None:
    result = run("truncate", "-n", "3", "--json", stdin=NO_NEWLINE)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["exact"], data["method"]) == (True, "tiktoken")
    assert result.stderr == ""


def test_help_says_a_claude_budget_includes_the_framing() -> None:
    text = " ".join(run("truncate", "--help").stdout.split())
    assert "Claude model's budget includes its user-message framing" in text
    assert "no line end added" in text
