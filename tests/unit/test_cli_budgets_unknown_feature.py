"""``tokenbudget budgets --feature NAME`` for a feature the policy has no entry for: the default
limits apply to it, and a note on stderr says so and names the configured features (a typo would
otherwise show a reassuring "normal"). Known features get no note."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_support import run
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.stores import open_store
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.usefixtures("isolated")

POLICY = """
daily_usd = "5"

[features.support]
user_daily_usd = "0.01"

[features."search.v2"]
feature_daily_usd = "1"
"""


@pytest.fixture
def store(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(open_store(url))
    ledger.record(Usage(input_tokens=1_000), model="gpt-4o", feature="support", user="alice")
    ledger.close()
    return url


@pytest.fixture
def policy(tmp_path: Path) -> str:
    path = tmp_path / "budgets.toml"
    path.write_text(POLICY, encoding="utf-8")
    return str(path)


def notes(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("note: ")]


@pytest.mark.parametrize("as_json", [False, True])
def test_a_feature_without_an_entry_is_named_with_the_configured_ones(
    store: str, policy: str, as_json: bool
) -> None:
    result = run(
        "budgets", "--store", store, "--policy", policy, "--feature", "suport", *(["--json"] * as_json)
    )
    assert result.exit_code == 0, result.output
    (note,) = notes(result.stderr)
    assert "[features.suport]" in note
    assert "default limits" in note
    assert "search.v2" in note
    assert "'support'" in note  # the close match
    if as_json:
        assert json.loads(result.stdout)["steps"]  # stdout stays JSON


def test_a_configured_feature_gets_no_note(store: str, policy: str) -> None:
    for feature in ("support", "search.v2"):
        result = run("budgets", "--store", store, "--policy", policy, "--feature", feature)
        assert result.exit_code == 0, result.output
        assert notes(result.stderr) == []
    result = run("budgets", "--store", store, "--policy", policy)
    assert notes(result.stderr) == []


def test_a_policy_without_features(store: str, tmp_path: Path) -> None:
    path = tmp_path / "flat.toml"
    path.write_text('daily_usd = "5"\n', encoding="utf-8")
    result = run("budgets", "--store", store, "--policy", str(path), "--feature", "support v2")
    assert result.exit_code == 0, result.output
    (note,) = notes(result.stderr)
    assert '[features."support v2"]' in note
    assert "configures no features" in note
