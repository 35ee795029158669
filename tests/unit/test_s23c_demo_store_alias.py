"""A demo run whose ``--store`` names the demo's own file another way
(``sqlite:////abs/dir/tokenbudget-demo.db``, ``sqlite:///./tokenbudget-demo.db``, a symlink) is a
run on the demo's own store: it takes the directory's demo lock, so a plain ``tokenbudget demo``
started meanwhile records to a file of its own instead of deleting that file under it (review s23
#6: the first run lost its earlier stages and failed with ``no spend for feature demo:baseline``).

Two real runs at once, as the other demo tests make them: the second starts after the first
run's first turn (from its ``on_turn``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from cli_support import run
from langchain_tokenbudget.demo_pipeline import run_demo
from tokenbudget_core.demo_report import DemoSummary

pytest.importorskip("langchain_core")
pytestmark = pytest.mark.usefixtures("isolated")

USERS, TURNS = 3, 3
SMALL = ("--users", "2", "--turns", "2", "--no-progress", "--json")


def _with_a_run_started_meanwhile(store: str, *args: str) -> tuple[DemoSummary, dict[str, Any]]:
    """``run_demo(store=store)``, with ``tokenbudget demo <args>`` run after its first turn."""
    inner: list[dict[str, Any]] = []

    def second_run() -> None:
        if not inner:
            result = run("demo", *args)
            assert result.exit_code == 0, result.output
            inner.append(json.loads(result.stdout))

    first = run_demo(store=store, users=USERS, turns=TURNS, seed=5, html="mine.html", on_turn=second_run)
    (second,) = inner
    return first, second


def _whole(summary: DemoSummary) -> None:
    """Every stage of ``summary`` was charged with all its calls, none lost to another run."""
    for row in summary.rows:
        assert row.requests == row.stats.calls + row.stats.cache_hits, row
    assert summary.baseline.requests == USERS * TURNS


@pytest.mark.parametrize(
    "spelling",
    [
        lambda here: f"sqlite:///{here / 'tokenbudget-demo.db'}",
        lambda here: "sqlite:///./tokenbudget-demo.db",
        lambda here: f"sqlite:///{here / 'sub' / '..' / 'tokenbudget-demo.db'}",
    ],
    ids=["absolute", "dot", "dotdot"],
)
def test_a_run_on_the_demo_file_by_another_name_is_not_deleted_by_a_plain_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spelling: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    store = spelling(tmp_path)
    first, second = _with_a_run_started_meanwhile(store, *SMALL)
    _whole(first)
    assert first.store == store
    assert first.own_files == ()
    # the plain run saw the lock held and used files of its own, leaving the first run's file be
    assert second["store"].startswith("sqlite:///tokenbudget-demo-run-")
    assert second["own_files"] == [second["store"].removeprefix("sqlite:///"), second["html"]]
    assert all(Path(f).is_file() for f in second["own_files"])
    report = run("report", "--store", store, "--days", "1", "--by", "feature", "--top", "100", "--json")
    assert report.exit_code == 0, report.output
    rows = json.loads(report.stdout)["breakdowns"][0]["rows"]
    assert {row["key"] for row in rows} == {
        f"demo:{row.stage}" for row in first.rows
    }  # the first run's alone


def test_a_symlink_to_the_demo_file_is_the_demo_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not hasattr(os, "symlink") or os.name == "nt":
        pytest.skip("symlinks")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "ledger.db").symlink_to(tmp_path / "tokenbudget-demo.db")
    first, second = _with_a_run_started_meanwhile(f"sqlite:///{tmp_path / 'elsewhere' / 'ledger.db'}", *SMALL)
    _whole(first)
    assert second["store"].startswith("sqlite:///tokenbudget-demo-run-")


def test_a_run_by_another_name_started_meanwhile_uses_a_file_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    inner: list[dict[str, Any]] = []
    alias = f"sqlite:///{tmp_path / 'tokenbudget-demo.db'}"

    def second_run() -> None:
        if not inner:
            result = run("demo", *SMALL, "--store", alias, "--html", "theirs.html")
            assert result.exit_code == 0, result.output
            inner.append(json.loads(result.stdout))

    first = run_demo(users=USERS, turns=TURNS, seed=5, html=True, on_turn=second_run)
    (second,) = inner
    _whole(first)
    assert first.store == "sqlite:///tokenbudget-demo.db"
    assert first.own_files == ()
    # the file it named was in use by a run holding the lock: it recorded to one of its own
    assert second["store"].startswith("sqlite:///tokenbudget-demo-run-")
    assert second["own_files"] == [second["store"].removeprefix("sqlite:///")]
    assert second["html"] == "theirs.html"
    assert second["stages"][0]["requests"] == 4


def test_another_file_is_still_a_shared_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    other = f"sqlite:///{tmp_path / 'sub' / 'tokenbudget-demo.db'}"  # the name, in another directory
    first, second = _with_a_run_started_meanwhile(other, *SMALL)
    _whole(first)
    assert second["store"] == "sqlite:///tokenbudget-demo.db"
    assert second["own_files"] == []
    report = run("report", "--store", other, "--days", "1", "--by", "feature", "--top", "100", "--json")
    keys = {row["key"] for row in json.loads(report.stdout)["breakdowns"][0]["rows"]}
    assert all("@run-" in k for k in keys)  # a store like any other: the run's features marked
