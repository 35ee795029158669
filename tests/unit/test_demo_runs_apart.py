"""Two ``tokenbudget demo`` runs on the same ``--store`` never mix: each run's savings table counts
its own calls only, as the first run's did."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cli_support import run

pytestmark = pytest.mark.usefixtures("isolated")


def _demo(store: str) -> dict[str, Any]:
    result = run(
        "demo", "--users", "3", "--turns", "3", "--no-progress", "--html", "-", "--store", store, "--json"
    )
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _figures(summary: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (
            s["stage"],
            s["requests"],
            s["input_tokens"],
            s["output_tokens"],
            s["cost_usd"],
            s["cost_per_active_user_usd"],
        )
        for s in summary["stages"]
    ]


def test_a_second_run_on_the_same_store_counts_only_its_own_calls(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'shared.db'}"
    first, second = _demo(store), _demo(store)
    assert _figures(second) == _figures(first)
    for stage in second["stages"]:
        assert stage["requests"] == stage["stats"]["calls"] + stage["stats"]["cache_hits"]
    # both runs are in the store, apart: each stage of each run has its own feature
    report = run("report", "--store", store, "--days", "1", "--by", "feature", "--top", "100", "--json")
    features = [row["key"] for row in json.loads(report.stdout)["breakdowns"][0]["rows"]]
    assert len(features) == 2 * len(first["stages"])
    assert all(f.startswith("demo:") for f in features)
