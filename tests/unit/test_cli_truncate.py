"""``tokenbudget truncate``: the text cut to a budget, on stdout or as JSON (smart adds a marker)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from tokenbudget_core.cli import EXIT_BAD_INPUT, EXIT_USAGE, cli
from tokenbudget_core.counting import TokenCounter

TEXT = " ".join(f"Sentence number {i} explains one more detail of the budget." for i in range(40))


def run(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=stdin)


def test_truncate_keeps_the_start_within_budget() -> None:
    result = run("truncate", "-n", "30", stdin=TEXT)
    assert result.exit_code == 0, result.output
    text = result.stdout.removesuffix("\n")  # echo ends the line
    assert TEXT.startswith(text)
    assert 0 < TokenCounter.for_model("gpt-4o").count(text) <= 30


def test_truncate_json_reports_counts_for_each_strategy(tmp_path: Path) -> None:
    path = tmp_path / "doc.txt"
    path.write_text(TEXT, encoding="utf-8")
    counter = TokenCounter.for_model("gpt-4o-mini")
    for strategy in ("keep_start", "keep_end", "keep_both", "smart"):
        result = run(
            "truncate", str(path), "--max-tokens", "50", "-m", "gpt-4o-mini", "-s", strategy, "--json"
        )
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert data["strategy"] == strategy
        assert data["truncated"] is True
        assert data["tokens_before"] == counter.count(TEXT)
        assert data["tokens_after"] == counter.count(data["text"]) <= 50
    smart = json.loads(run("truncate", str(path), "-n", "50", "-s", "smart", "--marker", "", "--json").stdout)
    assert smart["text"].rstrip().endswith("budget.")  # whole sentences only


def test_truncate_text_that_fits_is_unchanged() -> None:
    data = json.loads(run("truncate", "-n", "100", "--json", stdin="short text").stdout)
    assert data == {
        "text": "short text",
        "tokens_before": 2,
        "tokens_after": 2,
        "truncated": False,
        "strategy": "keep_start",
        "model": "gpt-4o",
        "exact": True,
        "method": "tiktoken",
    }


def test_truncate_bad_input_is_one_line() -> None:
    bad = run("truncate", "-n", "ten", stdin=TEXT)
    assert bad.exit_code == EXIT_BAD_INPUT
    assert bad.stderr.startswith("error: --max-tokens")
    unknown = run("truncate", "-n", "10", "-m", "no-such-model-xyz", stdin=TEXT)
    assert unknown.exit_code == EXIT_BAD_INPUT
    assert "no-such-model-xyz" in unknown.stderr
    assert len(unknown.stderr.splitlines()) == 1
    assert run("truncate", stdin=TEXT).exit_code == EXIT_USAGE  # --max-tokens is required
    assert run("truncate", "-n", "5", "-s", "middle", stdin=TEXT).exit_code == EXIT_USAGE
