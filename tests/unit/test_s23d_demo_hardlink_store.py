"""A demo ``--store`` naming a hard link to ``tokenbudget-demo.db`` is a store of its own, not the
demo's: the demo's own store is recognised by its resolved path (an absolute path, ``./``, ``..``,
a symlink), not by file identity. Taken as the demo's own, the run recreated
``tokenbudget-demo.db`` but recorded through the link, still on the old file with the last run's
calls, so its report showed about twice the figures and the new file stayed empty (review s23d
#3). Real runs through the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from cli_support import run

pytest.importorskip("langchain_core")
pytestmark = pytest.mark.usefixtures("isolated")

SMALL = ("--users", "3", "--turns", "2", "--no-progress", "--json")


def _demo(*args: str) -> dict[str, Any]:
    result = run("demo", *SMALL, *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def _figures(summary: dict[str, Any]) -> list[tuple[str, int, int, int, str]]:
    return [
        (s["stage"], s["requests"], s["input_tokens"], s["output_tokens"], s["cost_usd"])
        for s in summary["stages"]
    ]


def _features(store: str) -> set[str]:
    report = run("report", "--store", store, "--days", "1", "--by", "feature", "--top", "100", "--json")
    assert report.exit_code == 0, report.output
    return {row["key"] for row in json.loads(report.stdout)["breakdowns"][0]["rows"]}


def test_a_hard_link_to_the_demo_file_is_a_store_of_its_own_with_the_runs_own_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not hasattr(os, "link"):
        pytest.skip("hard links")
    monkeypatch.chdir(tmp_path)
    first = _demo()
    assert first["store"] == "sqlite:///tokenbudget-demo.db"
    os.link(tmp_path / "tokenbudget-demo.db", tmp_path / "mine.db")
    own_before = (tmp_path / "tokenbudget-demo.db").stat().st_ino

    second = _demo("--store", "sqlite:///mine.db")

    # the same workload again: the same figures, not this run's added to the last one's
    assert _figures(second) == _figures(first)
    assert second["store"] == "sqlite:///mine.db"
    assert second["own_files"] == []
    # recorded to as given, marked apart from the earlier run's calls in that file
    keys = _features("sqlite:///mine.db")
    assert {k for k in keys if "@run-" not in k} == {f"demo:{s['stage']}" for s in first["stages"]}
    assert {k.split("@")[0] for k in keys if "@run-" in k} == {f"demo:{s['stage']}" for s in second["stages"]}
    # the demo's own file was not recreated under the link: still the one file, with both runs
    assert (tmp_path / "tokenbudget-demo.db").stat().st_ino == own_before
    assert os.path.samefile(tmp_path / "tokenbudget-demo.db", tmp_path / "mine.db")
    # a plain run after it recreates its own file and is whole; the link keeps its file
    third = _demo()
    assert _figures(third) == _figures(first)
    assert _features("sqlite:///tokenbudget-demo.db") == {f"demo:{s['stage']}" for s in first["stages"]}
    assert _features("sqlite:///mine.db") == keys
