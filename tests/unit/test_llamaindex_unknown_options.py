"""A misspelt option of a LlamaIndex adapter is refused by name, never silently ignored.

LlamaIndex's pydantic bases (``BaseEventHandler``, ``LLM``) ignore unknown fields: without a
check, ``CostEventHandler(usr="ada")`` would record every call under no user, and
``RoutedLLM(ledgr=ledger)`` would route without budget awareness.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.llms import MockLLM

from llamaindex_tokenbudget import BudgetCallbackHandler, CachedLLM, CostEventHandler, RoutedLLM
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger

LEDGER = Ledger("memory://")
TIERS = {"small": MockLLM()}
MODELS = {"small": "gpt-4o-mini"}


@pytest.mark.parametrize(
    ("make", "option", "meant"),
    [
        (
            lambda: CostEventHandler(ledger=LEDGER, model="gpt-4o-mini", usr="ada", feture="docs"),
            "usr",
            "user",
        ),
        (lambda: CostEventHandler(ledger=LEDGER, feture="docs"), "feture", "feature"),
        (lambda: CostEventHandler.model_validate({"ledger": LEDGER, "usr": "ada"}), "usr", "user"),
        (lambda: RoutedLLM(TIERS, models=MODELS, ledgr=LEDGER), "ledgr", "ledger"),
        (lambda: BudgetCallbackHandler(LEDGER, usr="ada"), "usr", "user"),
    ],
)
def test_an_unknown_option_is_refused_by_name(make: Callable[[], Any], option: str, meant: str) -> None:
    with pytest.raises(ValueError) as caught:  # InvalidInputError (pydantic wraps it in model_validate)
        make()
    assert f"{option}: is not a" in str(caught.value)
    assert f"did you mean {meant!r}" in str(caught.value)


def test_the_error_is_an_invalid_input_error_naming_the_option() -> None:
    with pytest.raises(InvalidInputError) as caught:
        CostEventHandler(ledger=LEDGER, usr="ada")
    assert caught.value.field == "usr"


def test_known_options_still_charge_the_user_and_feature() -> None:
    ledger = Ledger("memory://")
    handler = CostEventHandler(ledger=ledger, model="gpt-4o-mini", user="ada", feature="docs")
    get_dispatcher().add_event_handler(handler)
    try:
        MockLLM(max_tokens=5).complete("hi")
    finally:
        get_dispatcher().event_handlers.remove(handler)
    assert [r.rollup_key for r in ledger.store.rollup([ledger.day()])] == ["docs/ada/gpt-4o-mini"]


@pytest.mark.parametrize(
    "make",
    [
        lambda: CachedLLM(llm=MockLLM(), model="gpt-4o-mini", cahce=None),
    ],
)
def test_classes_with_a_fixed_signature_refuse_a_typo_too(make: Callable[[], Any]) -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        make()
