"""``$TOKENBUDGET_PRICES`` and ``$TOKENBUDGET_MODELS`` follow the rule of the package's other
variables (``errors.environment_value``): set but empty or blank, they are refused by name, not
read as unset. Before, an empty ``$TOKENBUDGET_PRICES`` (``TOKENBUDGET_PRICES=$NEGOTIATED`` with
that one unset) silently priced every call at list prices: every cost, budget and report a wrong
number, with no error; a blank one was blamed on ``path``."""

from __future__ import annotations

import pytest

from tokenbudget_core import price_overrides, registry
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.pricing import cost_of
from tokenbudget_core.usage import Usage


@pytest.fixture(autouse=True)
def fresh_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process-wide table and registry made anew from the environment this test sets."""
    monkeypatch.setattr(price_overrides, "_default_table", None)
    monkeypatch.setattr(registry, "_default", None)


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_prices_variable_is_refused_by_name(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("TOKENBUDGET_PRICES", value)
    with pytest.raises(InvalidInputError) as info:
        cost_of(Usage(input_tokens=1_000_000), "gpt-4o")
    assert info.value.field == "$TOKENBUDGET_PRICES"
    assert "unset it" in str(info.value)


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_models_variable_is_refused_by_name(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("TOKENBUDGET_MODELS", value)
    with pytest.raises(InvalidInputError) as info:
        registry.get_model("gpt-4o")
    assert info.value.field == "$TOKENBUDGET_MODELS"


def test_unset_variables_mean_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOKENBUDGET_PRICES", raising=False)
    monkeypatch.delenv("TOKENBUDGET_MODELS", raising=False)
    assert cost_of(Usage(input_tokens=1_000_000), "gpt-4o") > 0
    assert registry.get_model("gpt-4o").name
