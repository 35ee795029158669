"""A model with no known output limit: the error says where to pass ``max_output_tokens``.

Its fix read "pass it"; a LlamaIndex or LangChain user whose handler reserved for them had no
call of their own to pass it to.
"""

from __future__ import annotations

import pytest

from tokenbudget_core.errors import InvalidInputError, UnknownModelError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.registry import default_registry


def test_every_model_the_registry_lists_resolves() -> None:
    registry = default_registry()
    unresolved = []
    for name in registry.known_models():
        try:
            registry.get(name)
        except UnknownModelError:
            unresolved.append(name)
    assert unresolved == []  # before: 896 of 1,925 (genai-prices ids with no tokenizer or window)


def test_the_fix_names_reserve_the_handler_and_the_feature_limit() -> None:
    registry = default_registry()
    limitless = next(n for n in registry.known_models() if registry.get(n).max_output_tokens is None)
    ledger = Ledger("memory://")
    with pytest.raises(InvalidInputError) as e:
        ledger.reserve(model=limitless, input_tokens=10)
    assert e.value.field == "max_output_tokens"
    assert "BudgetCallbackHandler(..., max_output_tokens=...)" in str(e.value)
    assert "max_output_tokens_per_call" in str(e.value)
