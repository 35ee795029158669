"""The ``tokenbudget`` command: in-process with CliRunner, and as the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from cli_support import assert_one_line_error, run
from tokenbudget_core import registry
from tokenbudget_core.cli import EXIT_BAD_INPUT, EXIT_UNPRICED, EXIT_USAGE
from tokenbudget_core.counting import TokenCounter
from tokenbudget_core.explain import SAMPLE_MESSAGES, SAMPLE_REPLY, SAMPLE_TOOLS, run_demo
from tokenbudget_core.registry import ModelRegistry

pytestmark = pytest.mark.usefixtures("isolated")

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "How many tokens is this?"},
]
SCRIPT = Path(sys.executable).with_name("tokenbudget")


# -- count -------------------------------------------------------------------------------------------


def test_count_text_from_stdin_matches_the_counter() -> None:
    result = run("count", stdin="Hello, world!")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{int(TokenCounter.for_model('gpt-4o').count('Hello, world!'))}\n"
    assert result.stdout == "4\n"


def test_count_messages_file_json(tmp_path: Path) -> None:
    path = tmp_path / "chat.json"
    path.write_text(json.dumps(MESSAGES))
    result = run("count", "--json", "--model", "gpt-4o-mini", str(path))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    expected = TokenCounter.for_model("gpt-4o-mini").count_messages(MESSAGES)
    assert data == {
        "tokens": int(expected),
        "model": "gpt-4o-mini",
        "encoding": "o200k_base",
        "exact": True,
        "method": "tiktoken",
        "kind": "messages",
    }


def test_count_detects_text_and_format_flag_overrides() -> None:
    assert json.loads(run("count", "--json", "-", stdin="[1, 2, 3]").stdout)["kind"] == "text"
    assert json.loads(run("count", "--json", stdin="just words").stdout)["kind"] == "text"
    as_text = json.loads(run("count", "--json", "--format", "text", stdin=json.dumps(MESSAGES)).stdout)
    assert as_text["kind"] == "text"
    assert as_text["tokens"] == int(TokenCounter.for_model("gpt-4o").count(json.dumps(MESSAGES)))


def test_count_claude_offline_is_a_flagged_estimate() -> None:
    result = run("count", "--json", "-m", "claude-sonnet-4-5", stdin=json.dumps(MESSAGES))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["exact"], data["method"], data["kind"]) == (False, "estimate", "messages")
    assert "estimate" in result.stderr


@pytest.mark.parametrize(
    ("stdin", "args", "needles"),
    [
        ('[{"role": "user", "content": "hi"', (), ("not a valid JSON message list", "--format text")),
        ('[{"content": "hi"}]', (), ("messages[0].role",)),
        ('[{"role": "user", "content": "hi"}, 5]', (), ("messages[1]",)),
        ('[{"role": "robot", "content": "hi"}]', (), ("unknown role",)),
        ('{"role": "user"}', ("--format", "messages"), ("expected a JSON array",)),
        ("hello", ("--model", "gpt-4oo"), ("Unknown model 'gpt-4oo'", "gpt-4o")),
    ],
)
def test_count_bad_input_is_one_line_exit_1(
    stdin: str, args: tuple[str, ...], needles: tuple[str, ...]
) -> None:
    assert_one_line_error(run("count", *args, stdin=stdin), EXIT_BAD_INPUT, *needles)


def test_count_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.txt"
    assert_one_line_error(run("count", str(missing)), EXIT_BAD_INPUT, "cannot read", "missing.txt")


# -- cost --------------------------------------------------------------------------------------------


def test_cost_prints_total_and_breakdown() -> None:
    result = run("cost", "--model", "gpt-4o", "--input", "1000", "--output", "100", "--cache-read", "200")
    assert result.exit_code == 0, result.output
    first, *rest = result.stdout.splitlines()
    assert first.startswith("$0.003250 ")
    table = "\n".join(rest)
    for cell in ("input (uncached)", "$0.002000", "cache read", "$0.000250", "output", "$0.001000", "total"):
        assert cell in table


def test_cost_json_has_decimal_strings() -> None:
    figures = ["--input", "10000", "--output", "500", "--cache-read", "2000", "--cache-write", "3000"]
    figures += ["--cache-write-1h", "1000", "--reasoning", "100"]
    result = run("cost", "-m", "claude-sonnet-4-5-20250929", *figures, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    m = Decimal(1_000_000)
    expected = (
        5_000 * Decimal(3)
        + 2_000 * Decimal("0.3")
        + 2_000 * Decimal("3.75")
        + 1_000 * Decimal(6)
        + 500 * Decimal(15)
    ) / m
    assert isinstance(data["total"], str)
    assert Decimal(data["total"]) == expected
    assert (data["priced_as"], data["provider"], data["source"]) == (
        "claude-sonnet-4-5",
        "anthropic",
        "genai-prices",
    )
    assert data["usage"]["reasoning_tokens"] == 100


def test_cost_uses_price_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "prices.toml"
    path.write_text('[prices."gpt-4o"]\ninput_mtok = "1"\noutput_mtok = "2"\n')
    monkeypatch.setenv("TOKENBUDGET_PRICES", str(path))
    data = json.loads(run("cost", "-m", "gpt-4o", "--input", "1000000", "--output", "0", "--json").stdout)
    assert (data["total"], data["source"]) == ("1", "override")


def test_cost_unpriced_model_exits_3(monkeypatch: pytest.MonkeyPatch) -> None:
    reg = ModelRegistry()
    reg.register("acme-7b", provider="acme")
    monkeypatch.setattr(registry, "_default", reg)
    result = run("cost", "-m", "acme-7b", "--input", "10", "--output", "1")
    assert_one_line_error(result, EXIT_UNPRICED, "No price is known for model 'acme-7b'")
    assert "$0" not in result.output


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("--input", "-5", "--output", "1"), ("--input", "non-negative integer", "'-5'")),
        (("--input", "1.5", "--output", "1"), ("--input", "'1.5'")),
        (("--input", "10", "--output", "ten"), ("--output",)),
        (("--input", "10", "--output", "1", "--cache-read", "20"), ("--cache-read", "exceeds --input")),
        (
            ("--input", "10", "--output", "1", "--cache-write", "5", "--cache-write-1h", "6"),
            ("--cache-write-1h", "exceeds --cache-write"),
        ),
    ],
)
def test_cost_bad_figures_are_one_line_exit_1(args: tuple[str, ...], needles: tuple[str, ...]) -> None:
    assert_one_line_error(run("cost", "-m", "gpt-4o", *args), EXIT_BAD_INPUT, *needles)


def test_cost_unknown_model_exit_1() -> None:
    assert_one_line_error(
        run("cost", "-m", "gtp-4o", "--input", "1", "--output", "1"), EXIT_BAD_INPUT, "gtp-4o"
    )


def test_missing_required_option_is_clicks_usage_error() -> None:
    result = run("cost", "--input", "1", "--output", "1")
    assert result.exit_code == EXIT_USAGE
    assert "--model" in result.stderr


@pytest.mark.parametrize(
    ("given", "missing"), [(("--input", "10"), "--output"), (("--output", "10"), "--input")]
)
def test_missing_token_figure_is_clicks_usage_error(given: tuple[str, ...], missing: str) -> None:
    result = run("cost", "--model", "gpt-4o", *given)
    assert result.exit_code == EXIT_USAGE, result.output
    assert f"Missing option '{missing}'" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


# -- explain -----------------------------------------------------------------------------------------


def test_explain_table() -> None:
    result = run("explain")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for text in ("Sample request on gpt-4o", "Cost of this call", "gpt-4o-mini", "claude-sonnet-4-5", "~"):
        assert text in out
    prompt = TokenCounter.for_model("gpt-4o").count_messages(list(SAMPLE_MESSAGES), list(SAMPLE_TOOLS))
    assert f" {int(prompt)} " in out


def test_explain_json_adds_up_and_flags_claude_as_estimate() -> None:
    result = run("explain", "--json", "--model", "gpt-4o-mini")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"] == "gpt-4o-mini"
    assert len(data["messages"]) == len(SAMPLE_MESSAGES)
    assert (
        sum(m["tokens"] for m in data["messages"]) + data["overhead_tokens"]
        == data["prompt_tokens"]["tokens"]
    )
    assert data["output_tokens"]["tokens"] == int(TokenCounter.for_model("gpt-4o-mini").count(SAMPLE_REPLY))
    costs = {c["model"]: c for c in data["costs"]}
    assert list(costs) == ["gpt-4o-mini", "gpt-4o", "claude-sonnet-4-5"]
    assert costs["gpt-4o"]["exact"] is True
    assert costs["claude-sonnet-4-5"]["exact"] is False
    assert costs["claude-sonnet-4-5"]["estimated"] is True
    gpt = costs["gpt-4o"]
    expected = (gpt["prompt_tokens"] * Decimal("2.5") + gpt["output_tokens"] * Decimal(10)) / Decimal(
        1_000_000
    )
    assert Decimal(gpt["total"]) == expected


def test_run_demo_per_message_rows_add_up_for_claude_estimates() -> None:
    report = run_demo(model="claude-sonnet-4-5", compare=())
    assert [c.model for c in report.costs] == ["claude-sonnet-4-5"]
    assert not any(r.exact for r in report.rows)
    assert report.prompt_tokens.exact is False
    assert sum(r.tokens for r in report.rows) + report.overhead_tokens == report.prompt_tokens


def test_explain_unknown_model_exit_1() -> None:
    assert_one_line_error(run("explain", "-m", "nope-model-9"), EXIT_BAD_INPUT, "nope-model-9")


def test_help_documents_exit_codes() -> None:
    result = run("--help")
    assert result.exit_code == 0
    assert "Exit codes" in result.stdout
    assert "3  the model has no known price" in result.stdout


# -- the installed console script ---------------------------------------------------------------------


def script(
    *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "TOKENBUDGET_PRICES")}
    return subprocess.run(
        [str(SCRIPT), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **(env or {})},
    )


def test_console_script_end_to_end(tmp_path: Path) -> None:
    assert SCRIPT.exists(), f"{SCRIPT} is not installed; pip install -e ."
    ok = [
        script("--version"),
        script("count", "-", stdin="Hello, world!"),
        script("count", "--json", stdin=json.dumps(MESSAGES)),
        script("cost", "-m", "gpt-4o", "--input", "1000", "--output", "100", "--cache-read", "200"),
        script("cost", "-m", "gpt-4o", "--input", "1000", "--output", "100", "--json"),
        script("explain"),
        script("explain", "--json"),
    ]
    for proc in ok:
        assert proc.returncode == 0, (proc.args, proc.stderr)
        assert "Traceback" not in proc.stdout + proc.stderr
    assert ok[1].stdout == "4\n"
    assert json.loads(ok[2].stdout)["kind"] == "messages"
    assert ok[3].stdout.startswith("$0.003250 ")
    assert json.loads(ok[4].stdout)["total"] == "0.0035"
    assert json.loads(ok[6].stdout)["costs"][0]["model"] == "gpt-4o"

    models = tmp_path / "models.toml"
    models.write_text('[models."acme-7b"]\nprovider = "acme"\n')
    acme_env = {"TOKENBUDGET_MODELS": str(models)}
    failing = [
        (script("count", str(tmp_path / "missing.txt")), EXIT_BAD_INPUT),
        (script("count", stdin='[{"role": "user"'), EXIT_BAD_INPUT),
        (script("count", "-m", "nope-model-9", stdin="hi"), EXIT_BAD_INPUT),
        (script("cost", "-m", "gpt-4o", "--input", "-3", "--output", "1"), EXIT_BAD_INPUT),
        (script("cost", "-m", "acme-7b", "--input", "3", "--output", "1", env=acme_env), EXIT_UNPRICED),
        (script("cost", "--input", "3"), EXIT_USAGE),
    ]
    for proc, code in failing:
        assert proc.returncode == code, (proc.args, proc.stderr)
        assert "Traceback" not in proc.stdout + proc.stderr
        if code != EXIT_USAGE:
            assert proc.stderr.startswith("error: "), proc.stderr
            assert proc.stderr.count("\n") == 1, proc.stderr
            assert proc.stdout == ""
