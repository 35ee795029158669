"""The files a demo run makes for itself because another demo run is going in the directory
(``tokenbudget-demo-run-<id>.db`` and ``.html``) are kept, and the run says so and names them
(review s22b #4: they were never removed, and nothing told the user they were there to delete).
They are kept because the run's printed ``tokenbudget report --store ... --day ...`` hint names
its ledger file, which must still be there after the run; a file the user named (``--store``,
``--html``) is never among them."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from cli_support import run
from langchain_tokenbudget.demo_pipeline import run_demo
from tokenbudget_core.demo_report import DemoSummary

pytest.importorskip("langchain_core")
pytestmark = pytest.mark.usefixtures("isolated")

SMALL = ("--users", "2", "--turns", "2", "--no-progress")
NOTE = "note: another demo run was going in this directory, so this run used files of its own: "


def _during_another_run(*args: str, **other: Any) -> Result:
    """``tokenbudget demo <args>`` run after the first turn of another run (``run_demo(**other)``)."""
    inner: list[Result] = []

    def second_run() -> None:
        if not inner:
            inner.append(run("demo", *args))

    run_demo(users=3, turns=3, seed=5, on_turn=second_run, **other)
    (result,) = inner
    assert result.exit_code == 0, result.output
    return result


def _line(result: Result, start: str) -> str:
    return next(ln for ln in result.stdout.splitlines() if ln.startswith(start))


def _own_files(summary: DemoSummary | dict[str, Any]) -> list[str]:
    files = summary["own_files"] if isinstance(summary, dict) else list(summary.own_files)
    assert all(Path(f).is_file() for f in files), files  # kept
    return list(files)


def test_a_run_on_files_of_its_own_names_them_and_keeps_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = _during_another_run(*SMALL)
    ledger = _line(result, "ledger: ").removeprefix("ledger: ").split()[0]
    own = ledger.removeprefix("sqlite:///")
    report = _line(result, "HTML report: ").removeprefix("HTML report: ")
    assert own.startswith("tokenbudget-demo-run-")
    note = _line(result, "note: ")
    assert note == f"{NOTE}{own}, {report}; they are kept (no later run removes them): delete them when done"
    assert Path(own).is_file()
    assert Path(report).is_file()
    # the printed hint still works after the run: its ledger file is there, with the run's calls
    hint = _line(result, "ledger: ").split("try: ", 1)[1].rstrip(")")
    command = shlex.split(hint)
    assert command[:2] == ["tokenbudget", "report"], hint
    shown = run(*command[1:], "--json")
    assert shown.exit_code == 0, shown.output
    rows = json.loads(shown.stdout)["breakdowns"][0]["rows"]
    assert {row["key"] for row in rows} >= {"demo:baseline", "demo:budgets"}


def test_json_names_the_kept_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    shown = json.loads(_during_another_run(*SMALL, "--json").stdout)
    assert _own_files(shown) == [shown["store"].removeprefix("sqlite:///"), shown["html"]]


def test_files_the_user_named_are_not_the_runs_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    app = f"sqlite:///{tmp_path / 'app.db'}"
    # an explicit --store: only the report is the run's own
    shown = json.loads(_during_another_run(*SMALL, "--store", app, "--json").stdout)
    assert shown["store"] == app
    assert _own_files(shown) == [shown["html"]]
    assert shown["html"].startswith("tokenbudget-demo-run-")
    # an explicit --html: only the ledger file is
    shown = json.loads(_during_another_run(*SMALL, "--html", "mine.html", "--json").stdout)
    assert shown["html"] == "mine.html"
    assert _own_files(shown) == [shown["store"].removeprefix("sqlite:///")]
    # one file of its own: named alone
    result = _during_another_run(*SMALL, "--store", app)
    note = _line(result, "note: ")
    assert note.startswith(NOTE + "tokenbudget-demo-run-")
    assert note.endswith(".html; it is kept (no later run removes it): delete it when done")
    # both named: none, and no note
    result = _during_another_run(*SMALL, "--store", app, "--html", "mine.html")
    assert "note:" not in result.stdout


def test_a_run_alone_has_no_files_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("demo", *SMALL)
    assert result.exit_code == 0, result.output
    assert "note:" not in result.stdout
    assert run_demo(users=2, turns=2).own_files == ()


def test_run_demo_names_its_own_ledger_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    inner: list[DemoSummary] = []

    def second_run() -> None:
        if not inner:
            inner.append(run_demo(users=2, turns=2))

    first = run_demo(users=2, turns=2, on_turn=second_run)
    (second,) = inner
    assert first.own_files == ()
    assert _own_files(second) == [second.store.removeprefix("sqlite:///")]
