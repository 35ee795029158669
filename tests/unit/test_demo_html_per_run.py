"""Two ``tokenbudget demo`` runs at once in one directory write two HTML reports (review s22b #4b):
the run that records to a ledger file of its own (``tokenbudget-demo-run-<id>.db``, as another run
uses ``tokenbudget-demo.db``) writes its report beside it, ``tokenbudget-demo-run-<id>.html``, and
prints that path, instead of overwriting the other run's ``tokenbudget-demo.html`` (whichever run
ended last won the file, and a run's printed report showed the other run's figures). An explicit
``--html PATH`` is used as given, ``--html -`` writes none."""

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


def _beside_another_run(*args: str) -> Result:
    """``tokenbudget demo <args>`` started while another run (3 users x 3 turns) is on
    ``tokenbudget-demo.db`` in this directory, whose report ``tokenbudget-demo.html`` is there."""
    Path("tokenbudget-demo.html").write_text(OTHER_REPORT, encoding="utf-8")
    inner: list[Result] = []

    def second_run() -> None:
        if not inner:
            inner.append(run("demo", *args))

    other = run_demo(users=3, turns=3, seed=5, on_turn=second_run)
    assert other.store == "sqlite:///tokenbudget-demo.db"
    (result,) = inner
    assert result.exit_code == 0, result.output
    assert Path("tokenbudget-demo.html").read_text(encoding="utf-8") == OTHER_REPORT  # left alone
    return result


def _printed(result: Result, label: str) -> str:
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith(label))
    return line.removeprefix(label).split()[0]


def _is_this_runs_report(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.lstrip().lower().startswith("<!doctype html"), text[:80]
    assert "2 users &times; 2 support-chat turns" in text


def test_a_run_on_a_file_of_its_own_writes_its_report_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = _beside_another_run(*SMALL)
    ledger = _printed(result, "ledger: ")
    html = _printed(result, "HTML report: ")
    run_id = re.fullmatch(r"sqlite:///tokenbudget-demo-run-([0-9a-f]{12})\.db", ledger)
    assert run_id, ledger
    assert html == f"tokenbudget-demo-run-{run_id.group(1)}.html"
    _is_this_runs_report(tmp_path / html)


def test_json_names_the_runs_own_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    shown = json.loads(_beside_another_run(*SMALL, "--json").stdout)
    assert shown["html"] == shown["store"].removeprefix("sqlite:///").removesuffix(".db") + ".html"
    assert shown["html"].startswith("tokenbudget-demo-run-")
    _is_this_runs_report(tmp_path / shown["html"])


@pytest.mark.parametrize(
    ("html", "written"),
    [("mine.html", ["mine.html"]), ("-", [])],
    ids=["explicit-path", "none"],
)
def test_an_html_flag_is_used_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, html: str, written: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    result = _beside_another_run(*SMALL, "--html", html)
    reports = sorted(p.name for p in tmp_path.glob("*.html") if p.name != "tokenbudget-demo.html")
    assert reports == written
    if html != "-":
        assert _printed(result, "HTML report: ") == html
        _is_this_runs_report(tmp_path / html)
    else:
        assert "HTML report:" not in result.stdout


def test_a_run_alone_writes_the_default_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("demo", *SMALL)
    assert result.exit_code == 0, result.output
    assert _printed(result, "HTML report: ") == "tokenbudget-demo.html"
    assert _printed(result, "ledger: ") == "sqlite:///tokenbudget-demo.db"
    _is_this_runs_report(tmp_path / "tokenbudget-demo.html")
    assert not list(tmp_path.glob("tokenbudget-demo-run-*"))
