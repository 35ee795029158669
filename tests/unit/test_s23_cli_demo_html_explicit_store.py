"""A ``tokenbudget demo --store URL`` run (no ``--html``) started while another demo run is going in
the same directory writes its HTML report to a file of its own, ``tokenbudget-demo-run-<id>.html``,
and prints that path (review s22b #4b, the explicit-store case): both runs wrote
``tokenbudget-demo.html``, so one run's printed report showed the other run's figures (two runs
on one shared ``--store`` keep their ledger rows apart, but not their report)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import Result

from cli_support import run
from langchain_tokenbudget.demo_pipeline import run_demo

pytest.importorskip("langchain_core")
pytestmark = pytest.mark.usefixtures("isolated")

SMALL = ("--users", "2", "--turns", "2", "--no-progress")
OTHER_REPORT = "<!doctype html><p>the other run's report</p>"


def _printed(result: Result, label: str) -> str:
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith(label))
    return line.removeprefix(label).split()[0]


def _holds(path: Path, users: int, turns: int) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.lstrip().lower().startswith("<!doctype html"), text[:80]
    assert f"{users} users &times; {turns} support-chat turns" in text


def _during(other: dict[str, object], *args: str) -> Result:
    """``tokenbudget demo <args>`` run after the first turn of another run (``run_demo(**other)``)."""
    inner: list[Result] = []

    def second_run() -> None:
        if not inner:
            inner.append(run("demo", *args))

    run_demo(users=3, turns=3, seed=5, on_turn=second_run, **other)  # type: ignore[arg-type]
    (result,) = inner
    assert result.exit_code == 0, result.output
    return result


def test_an_explicit_store_run_beside_a_default_run_writes_its_own_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("tokenbudget-demo.html").write_text(OTHER_REPORT, encoding="utf-8")  # the other run's
    result = _during({}, *SMALL, "--store", f"sqlite:///{tmp_path / 'app.db'}")
    html = _printed(result, "HTML report: ")
    assert re.fullmatch(r"tokenbudget-demo-run-[0-9a-f]{12}\.html", html), html
    _holds(tmp_path / html, 2, 2)
    assert Path("tokenbudget-demo.html").read_text(encoding="utf-8") == OTHER_REPORT


def test_two_runs_on_one_explicit_store_write_two_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    shared = f"sqlite:///{tmp_path / 'shared.db'}"
    outer: list[object] = []

    def second_run() -> None:
        if not outer:
            outer.append(run("demo", *SMALL, "--store", shared, "--json"))

    first = run_demo(store=shared, users=3, turns=3, seed=5, on_turn=second_run, html=True)
    (result,) = outer
    assert isinstance(result, Result)
    assert result.exit_code == 0, result.output
    second = json.loads(result.stdout)
    # the run that started first keeps the default report; the other writes one of its own
    assert first.html == "tokenbudget-demo.html"
    _holds(tmp_path / first.html, 3, 3)
    assert second["html"] != first.html
    assert re.fullmatch(r"tokenbudget-demo-run-[0-9a-f]{12}\.html", second["html"]), second["html"]
    _holds(tmp_path / second["html"], 2, 2)
    # its id is the run's in the shared ledger (features demo:<stage>@run-<id>)
    run_id = second["html"].removeprefix("tokenbudget-demo-").removesuffix(".html")
    shown = run("report", "--store", shared, "--day", second["day"], "--by", "feature", "--json")
    assert shown.exit_code == 0, shown.output
    keys = {row["key"] for row in json.loads(shown.stdout)["breakdowns"][0]["rows"]}
    assert f"demo:baseline@{run_id}" in keys


def test_a_default_run_beside_an_explicit_store_run_writes_its_own_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = _during({"store": f"sqlite:///{tmp_path / 'app.db'}", "html": True}, *SMALL)
    html = _printed(result, "HTML report: ")
    ledger = _printed(result, "ledger: ")
    assert html != "tokenbudget-demo.html"
    assert html == ledger.removeprefix("sqlite:///").removesuffix(".db") + ".html"
    _holds(tmp_path / html, 2, 2)
    _holds(tmp_path / "tokenbudget-demo.html", 3, 3)


@pytest.mark.parametrize("html", ["mine.html", "-"])
def test_an_html_flag_is_used_as_given_beside_another_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, html: str
) -> None:
    monkeypatch.chdir(tmp_path)
    result = _during({}, *SMALL, "--store", f"sqlite:///{tmp_path / 'app.db'}", "--html", html)
    assert sorted(p.name for p in tmp_path.glob("*.html")) == ([] if html == "-" else [html])
    if html != "-":
        assert _printed(result, "HTML report: ") == html
        _holds(tmp_path / html, 2, 2)


def test_an_explicit_store_run_alone_writes_the_default_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("demo", *SMALL, "--store", f"sqlite:///{tmp_path / 'app.db'}")
    assert result.exit_code == 0, result.output
    assert _printed(result, "HTML report: ") == "tokenbudget-demo.html"
    _holds(tmp_path / "tokenbudget-demo.html", 2, 2)
    assert not list(tmp_path.glob("tokenbudget-demo-run-*"))
