"""``tokenbudget demo``: the workload, the staged replay through LangChain, and what it reports."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from langchain_tokenbudget.demo_pipeline import STAGES, run_demo
from tokenbudget_core import InvalidInputError, TokenCounter, cost_of
from tokenbudget_core.cli import EXIT_BAD_INPUT, cli
from tokenbudget_core.demo_workload import SYSTEM_PROMPT, build_workload, reply_to
from tokenbudget_core.usage import Usage


def test_workload_is_reproducible_and_realistic() -> None:
    a, b = build_workload(users=20, turns=10, seed=3), build_workload(users=20, turns=10, seed=3)
    assert a == b
    assert a != build_workload(users=20, turns=10, seed=4)
    turns = [t for c in a.conversations for t in c]
    assert len(turns) == a.turns == 200
    assert {t.complexity for t in turns} == {"simple", "complex"}
    assert sum(t.faq for t in turns) > 40  # many users ask the same questions
    assert any(t.pasted_log and "   " in t.text for t in turns)
    assert len(reply_to(next(t for t in turns if t.complexity == "complex"))) > 4 * len(
        reply_to(next(t for t in turns if t.complexity == "simple"))
    )
    assert TokenCounter.for_model("gpt-4o").count(SYSTEM_PROMPT) > 1_000  # a long system prompt


@pytest.mark.parametrize(("field", "kwargs"), [("users", {"users": 0}), ("turns", {"turns": 201}),
                                               ("heavy_share", {"heavy_share": 2})])  # fmt: skip
def test_workload_rejects_bad_figures(field: str, kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidInputError, match=field):
        build_workload(**kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def summary(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    store = f"sqlite:///{tmp_path_factory.mktemp('demo') / 'ledger.db'}"
    return run_demo(store=store, users=10, turns=20, seed=11)


def test_baseline_is_charged_what_the_provider_would_bill(summary) -> None:  # type: ignore[no-untyped-def]
    """The baseline sends the system prompt and the whole history every turn: recount it independently."""
    counter = TokenCounter.for_model("gpt-4o")
    workload = build_workload(users=10, turns=20, seed=11)
    expected_in = expected_out = 0
    cost = Decimal(0)
    for convo in workload.conversations:
        history: list[dict[str, str]] = []
        for turn in convo:
            prompt = [
                {"role": "system", "content": SYSTEM_PROMPT},
                *history,
                {"role": "user", "content": turn.text},
            ]
            n_in, n_out = int(counter.count_messages(prompt)), int(counter.count(reply_to(turn)))
            expected_in, expected_out = expected_in + n_in, expected_out + n_out
            cost += cost_of(Usage(input_tokens=n_in, output_tokens=n_out), "gpt-4o")
            history += [
                {"role": "user", "content": turn.text},
                {"role": "assistant", "content": reply_to(turn)},
            ]
    base = summary.baseline
    assert (base.input_tokens, base.output_tokens, base.requests) == (expected_in, expected_out, 200)
    assert base.cost_usd == cost
    assert base.cost_per_active_user_usd == cost / 10


def test_each_control_saves_and_the_table_adds_up(summary) -> None:  # type: ignore[no-untyped-def]
    rows = {r.stage: r for r in summary.rows}
    assert [r.stage for r in summary.rows] == list(STAGES)
    assert rows["compression"].input_tokens < rows["baseline"].input_tokens
    assert rows["compression"].stats.tokens_compressed > 0
    assert rows["memory"].input_tokens < rows["compression"].input_tokens
    caching = rows["caching"]
    assert caching.stats.cache_hits > 0
    assert caching.stats.calls + caching.stats.cache_hits == 200
    assert caching.cost_usd < rows["memory"].cost_usd * Decimal("0.8")
    assert caching.requests == 200  # hits are recorded in the ledger too, at no cost
    assert rows["routing"].cost_usd < rows["caching"].cost_usd * Decimal("0.8")
    assert 0 < rows["routing"].stats.routed_cheap < rows["routing"].stats.calls
    # The ledger's counterfactual: what the routed calls would have cost on the premium model.
    assert rows["routing"].routing_saved_usd > 0
    assert rows["memory"].routing_saved_usd == 0
    for prev, row in zip(summary.rows, summary.rows[1:], strict=False):
        assert row.saved_vs_previous_usd == prev.cost_usd - row.cost_usd
        assert row.saved_vs_baseline_usd == summary.baseline.cost_usd - row.cost_usd
    assert summary.controlled.saved_share > 0.5


def test_budgets_refuse_heavy_users_and_alert(summary) -> None:  # type: ignore[no-untyped-def]
    budgets = summary.controlled
    assert budgets.stage == "budgets"
    assert budgets.stats.refused > 0
    assert budgets.stats.calls + budgets.stats.refused + budgets.stats.cache_hits == 200
    assert summary.alerts
    assert all(a.budget == "user_daily_usd" and "demo:budgets" in a.scope for a in summary.alerts)
    refusing = [a for a in summary.alerts if a.refusing]  # the users it refused: told as such
    assert refusing
    assert all("is refusing calls at" in a.text and "passed" not in a.text for a in refusing)


def test_demo_command_json_and_html(tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    store = f"sqlite:///{tmp_path / 'l.db'}"
    result = CliRunner().invoke(
        cli, ["demo", "--users", "4", "--turns", "3", "--store", store, "--html", str(html), "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [s["stage"] for s in data["stages"]] == list(STAGES)
    page = html.read_text(encoding="utf-8")
    baseline = Decimal(data["stages"][0]["cost_per_active_user_usd"])
    shown = re.search(r'id="cpu-baseline">\$([0-9.,]+)<', page)
    assert shown is not None
    assert Decimal(shown.group(1)) == baseline.quantize(Decimal("0.00001"))
    assert "<script" not in page
    assert "http" not in page.replace("http://www.w3.org/2000/svg", "")  # no CDN, nothing remote
    # The same store answers `tokenbudget report` afterwards.
    report = CliRunner().invoke(cli, ["report", "--store", store, "--days", "1", "--by", "feature", "--json"])
    assert report.exit_code == 0, report.output
    assert "demo:baseline" in report.stdout


def test_demo_table_fits_a_terminal(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["demo", "--users", "3", "--turns", "2", "--store", f"sqlite:///{tmp_path / 'l.db'}", "--html", "-"],
    )
    assert result.exit_code == 0, result.output
    assert "cost per active user per day" in result.stdout
    assert "…" not in result.stdout  # nothing cut off at 80 columns
    # the table fits 80 columns; the prose after it is whole when piped (README), not wrapped at 80
    table = result.stdout[: result.stdout.index("cost per active user per day")]
    assert all(len(line) <= 80 for line in table.splitlines())


def test_demo_bad_input_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    for args, needle in (
        (["--users", "0"], "--users"),
        (["--live", "--users", "1", "--turns", "1"], "OPENAI_API_KEY"),
    ):
        result = CliRunner().invoke(cli, ["demo", "--store", "memory://", "--html", "-", *args])
        assert result.exit_code == EXIT_BAD_INPUT, result.output
        assert needle in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
