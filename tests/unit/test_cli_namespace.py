"""``--namespace`` of ``report``, ``budgets`` and ``serve``: refused where it cannot apply.

(Reading a namespaced Redis ledger through it: tests/integration/test_redis_url_namespace.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_support import assert_one_line_error, run
from tokenbudget_core.cli import EXIT_BAD_INPUT

pytestmark = pytest.mark.usefixtures("isolated")


@pytest.mark.parametrize("command", ["report", "budgets", "serve"])
def test_the_flag_is_offered(command: str) -> None:
    assert "--namespace NAME" in run(command, "--help").stdout


@pytest.mark.parametrize(
    ("store", "namespace", "needles"),
    [
        ("sqlite:///ledger.db", "prod", ["only a Redis ledger has a namespace", "sqlite:///ledger.db"]),
        ("memory://", "prod", ["only a Redis ledger"]),
        ("redis://:s3cret@127.0.0.1:1/0?namespace=a", "prod", ["names a namespace already"]),
        ("redis://127.0.0.1:1/0", "", ["must not be empty"]),
    ],
)
@pytest.mark.parametrize("command", ["report", "budgets", "serve"])
def test_a_namespace_that_cannot_apply_is_a_one_line_error(
    tmp_path: Path, command: str, store: str, namespace: str, needles: list[str]
) -> None:
    policy = tmp_path / "budgets.toml"
    policy.write_text('daily_usd = "10"\n')
    extra = ("--policy", str(policy)) if command == "budgets" else ()
    result = run(command, "--store", store, "--namespace", namespace, *extra)
    assert_one_line_error(result, EXIT_BAD_INPUT, "--namespace", *needles)
    assert "s3cret" not in result.stderr


def test_the_namespace_applies_to_the_store_of_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENBUDGET_STORE", "sqlite:///from-env.db")
    assert_one_line_error(
        run("report", "--namespace", "prod"), EXIT_BAD_INPUT, "--namespace", "sqlite:///from-env.db"
    )


def test_a_report_of_a_store_with_no_usage_in_its_days_says_so(tmp_path: Path) -> None:
    """A wrong --store, --namespace or day reads as a quiet day of zeros: a note on stderr
    says nothing was recorded, the tables (and their exit 0) are unchanged."""
    from tokenbudget_core.ledger import Ledger
    from tokenbudget_core.usage import Usage

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(url)
    ledger.record(Usage(input_tokens=5, output_tokens=1), model="gpt-4o-mini", user="u")
    ledger.close()
    quiet = run("report", "--store", url, "--day", "2020-01-01")
    assert quiet.exit_code == 0
    assert "no usage recorded in this store for 2020-01-01" in quiet.stderr
    assert "requests" in quiet.stdout
    today = run("report", "--store", url)
    assert today.exit_code == 0
    assert "no usage recorded" not in today.stderr
