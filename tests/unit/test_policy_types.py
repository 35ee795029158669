"""Budget policies with a setting of the wrong type: ``InvalidInputError`` naming the setting and the
fix, never a bare ``AttributeError`` / ``TypeError`` / ``UnicodeDecodeError``; in the CLI, one line.

Real TOML files in ``tmp_path``, read by :func:`load_policy` and by ``tokenbudget budgets``.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget, Ladder, load_policy
from tokenbudget_core.cli import EXIT_BAD_INPUT, cli
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger

# (TOML text, the setting the error must name)
WRONG_TYPES = [
    ("alerts = 5\n", "alerts"),
    ("alerts = 0.8\n", "alerts"),
    ('alerts = "0.8"\n', "alerts"),
    ("alerts = [0.8]\n", "alerts"),
    ("alerts = {thresholds = 0.8}\n", "alerts.thresholds"),
    ("[alerts]\nthresholds = 0.8\n", "alerts.thresholds"),
    ('[alerts]\nthresholds = "0.8, 1.0"\n', "alerts.thresholds"),
    ("[alerts]\nthresholds = {low = 0.8}\n", "alerts.thresholds"),
    ("[alerts]\nthresholds = [0.8, 1.5]\n", "alerts.thresholds"),
    ('[alerts]\nthresholds = ["0.8"]\n', "alerts.thresholds"),
    ("[alerts]\nthreshold = [0.8]\n", "alerts.threshold"),
    ("features = 5\n", "features"),
    ('features = ["support"]\n', "features"),
    ('features = "support"\n', "features"),
    ("features = false\n", "features"),
    ("[features]\nsupport = 5\n", "features.support"),
    ('[features]\nsupport = ["1"]\n', "features.support"),
    ("default_feature = 5\n", "default_feature"),
    ("default_feature = 0\n", "default_feature"),
    ("ladder = 5\n", "ladder"),
    ("ladder = 0\n", "ladder"),
    ("ladder = [0.6, 0.75]\n", "ladder"),
    ("[ladder]\ncheap = 0.5\n", "ladder.cheap"),
    ('[ladder]\ncheaper_tier = "0.6"\n', "ladder.cheaper_tier"),
]


@pytest.mark.parametrize(("text", "field"), WRONG_TYPES)
def test_a_wrongly_typed_setting_is_named(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "budgets.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidInputError) as info:
        load_policy(path)
    assert info.value.field == field, str(info.value)
    assert str(info.value).startswith(f"{field}: ")
    assert info.value.fix, str(info.value)  # says how to write it


@pytest.mark.parametrize(("text", "field"), WRONG_TYPES)
def test_the_budgets_command_names_the_setting_in_one_line(tmp_path: Path, text: str, field: str) -> None:
    db = tmp_path / "ledger.db"
    Ledger(f"sqlite:///{db}", spool_path=tmp_path / "spool").close()
    path = tmp_path / "budgets.toml"
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(cli, ["budgets", "--store", f"sqlite:///{db}", "--policy", str(path)])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {field}: ")


def test_a_table_given_as_a_value_says_to_write_a_table(tmp_path: Path) -> None:
    path = tmp_path / "budgets.toml"
    path.write_text("alerts = 0.8\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"must be a table, not a float.*\[alerts\]"):
        load_policy(path)
    path.write_text("[alerts]\nthresholds = 0.8\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"array.*not a float.*thresholds = \[0\.8, 1\.0\]"):
        load_policy(path)


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('daily_usd = "5" # été\n'.encode("latin-1"))
    with pytest.raises(InvalidInputError) as info:
        load_policy(path)
    assert info.value.field == "policy_file"
    assert str(path) in str(info.value)
    assert "UTF-8" in str(info.value)
    assert isinstance(info.value.__cause__, UnicodeDecodeError)


def test_a_utf8_file_with_accents_loads(tmp_path: Path) -> None:
    path = tmp_path / "budgets.toml"
    path.write_text('# budget für "Zoë"\n[features."café"]\nfeature_daily_usd = "5"\n', encoding="utf-8")
    policy = load_policy(path)
    assert policy.feature("café").feature_daily_usd == Decimal(5)


def test_the_budgets_command_names_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    Ledger(f"sqlite:///{db}", spool_path=tmp_path / "spool").close()
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'daily_usd = "5" # \xe9t\xe9\n')
    result = CliRunner().invoke(cli, ["budgets", "--store", f"sqlite:///{db}", "--policy", str(path)])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert result.stderr.startswith("error: --policy: ")
    assert "UTF-8" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_a_source_that_is_neither_a_path_nor_a_mapping_is_named() -> None:
    with pytest.raises(InvalidInputError, match="source"):
        load_policy(5)  # type: ignore[arg-type]


def test_well_typed_policies_still_load(tmp_path: Path) -> None:
    path = tmp_path / "budgets.toml"
    path.write_text(
        'daily_usd = "10"\n[features.support]\nuser_daily_usd = "0.5"\n'
        '[default_feature]\nfeature_daily_usd = "1"\n[ladder]\ncheaper_tier = 0.5\n'
        "[alerts]\nthresholds = [0.5, 1]\n",
        encoding="utf-8",
    )
    policy = load_policy(path)
    assert policy.alert_thresholds == (0.5, 1)
    assert policy.ladder.cheaper_tier == 0.5
    assert policy.default_feature.feature_daily_usd == Decimal(1)
    assert load_policy({}).alert_thresholds == (0.8, 1.0)
    # A parsed mapping (JSON, say) may spell "not set" as None, as it may for the money settings.
    none = load_policy({"features": None, "ladder": None, "alerts": None, "default_feature": None})
    assert none == BudgetPolicy()
    assert load_policy({"alerts": {"thresholds": []}}).alert_thresholds == ()


# -- BudgetPolicy built in code -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"alert_thresholds": 0.8}, "alert_thresholds"),
        ({"alert_thresholds": "0.8"}, "alert_thresholds"),
        ({"alert_thresholds": None}, "alert_thresholds"),
        ({"alert_thresholds": (0.8, 2)}, "alert_thresholds"),
        ({"features": 5}, "features"),
        ({"features": ["support"]}, "features"),
        ({"features": {"support": {"user_daily_usd": "1"}}}, "features['support']"),
        ({"default_feature": {"user_daily_usd": "1"}}, "default_feature"),
        ({"ladder": {"cheaper_tier": 0.5}}, "ladder"),
    ],
)
def test_budget_policy_names_a_wrongly_typed_argument(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        BudgetPolicy(**kwargs)
    assert info.value.field == field, str(info.value)


def test_budget_policy_keeps_thresholds_as_a_tuple() -> None:
    policy = BudgetPolicy(alert_thresholds=[0.5, 0.9])  # type: ignore[arg-type]
    assert policy.alert_thresholds == (0.5, 0.9)
    assert BudgetPolicy(
        features={"s": FeatureBudget()}, default_feature=FeatureBudget(), ladder=Ladder()
    ).features == {"s": FeatureBudget()}
