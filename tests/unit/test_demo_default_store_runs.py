"""Two demo runs on the demo's own store (``tokenbudget-demo.db``) in one directory at once: neither
deletes the other's file nor mixes the other's calls into its table (review s22 #9)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cli_support import run
from langchain_tokenbudget.demo_pipeline import DEFAULT_DEMO_STORE, run_demo
from tokenbudget_core.demo_report import DemoSummary

pytestmark = pytest.mark.usefixtures("isolated")

SIZE = {"users": 3, "turns": 3, "seed": 5}


def _table(summary: DemoSummary) -> list[tuple[Any, ...]]:
    return [(r.stage, r.requests, r.input_tokens, r.output_tokens, r.cost_usd, r.stats) for r in summary.rows]


def _path(store: str) -> Path:
    assert store.startswith("sqlite:///")
    return Path(store.removeprefix("sqlite:///"))


def test_a_run_started_while_another_runs_keeps_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    solo = run_demo(**SIZE)  # type: ignore[arg-type]
    assert solo.store == DEFAULT_DEMO_STORE
    inner: list[DemoSummary] = []

    def second_run() -> None:  # the second run starts after the first one's first turn
        if not inner:
            inner.append(run_demo(**SIZE))  # type: ignore[arg-type]

    first = run_demo(**SIZE, on_turn=second_run)  # type: ignore[arg-type]
    (second,) = inner
    # each table counts its own run's calls only: the figures of a run alone
    assert _table(first) == _table(solo)
    assert _table(second) == _table(solo)
    # the first run kept the default file (nobody deleted it); the second wrote a file of its own,
    # which its summary names (the CLI's `tokenbudget report --store` hint), holding its calls only
    assert first.store == DEFAULT_DEMO_STORE
    assert second.store != first.store
    assert _path(second.store).parent == Path(".")
    assert _path(second.store).name.startswith("tokenbudget-demo-run-")
    # `tokenbudget report --store <its store>` shows each run's calls, and only those
    for summary in (first, second):
        shown = run("report", "--store", summary.store, "--day", summary.day, "--by", "feature", "--json")
        assert shown.exit_code == 0, shown.output
        rows = json.loads(shown.stdout)["breakdowns"][0]["rows"]
        assert {row["key"]: row["requests"] for row in rows} == {
            f"demo:{r.stage}": r.requests for r in solo.rows
        }
    # a run after both is alone again: the default file, recreated
    again = run_demo(**SIZE)  # type: ignore[arg-type]
    assert again.store == DEFAULT_DEMO_STORE
    assert _table(again) == _table(solo)
