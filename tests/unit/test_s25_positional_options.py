"""An option passed by position to a budget adapter is named, with the keyword to pass it by.

``BudgetCallbackHandler(ledger, "gpt-4o")`` (the options are keyword-only) raised Python's bare
``TypeError`` ("takes 2 positional arguments but 3 were given"), as did the async handler,
``BudgetMiddleware`` and LlamaIndex's ``BudgetCallbackHandler``: the project's rule is an
``InvalidInputError`` naming the field and the fix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import langchain_tokenbudget as lc
import llamaindex_tokenbudget as li
from tokenbudget_core.errors import InvalidInputError, TokenBudgetError
from tokenbudget_core.ledger import Ledger

LEDGER = Ledger("memory://")
MAKERS: list[tuple[Callable[..., Any], str]] = [
    (lc.BudgetCallbackHandler, "BudgetCallbackHandler"),
    (lc.AsyncBudgetCallbackHandler, "AsyncBudgetCallbackHandler"),
    (lc.BudgetMiddleware, "BudgetMiddleware"),
    (li.BudgetCallbackHandler, "BudgetCallbackHandler"),
]
IDS = ["lc-handler", "lc-async-handler", "lc-middleware", "li-handler"]


@pytest.mark.parametrize(("make", "owner"), MAKERS, ids=IDS)
def test_a_model_passed_by_position_is_named_with_the_keyword_to_use(
    make: Callable[..., Any], owner: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        make(LEDGER, "gpt-4o")
    error = caught.value
    assert isinstance(error, TokenBudgetError)
    assert not isinstance(error, TypeError)
    assert (error.field, error.value) == ("model", "gpt-4o")
    assert "pass model=... by keyword" in str(error)
    assert f"{owner}(ledger, model=...)" in str(error)
    assert "_BudgetHandler" not in str(error)


@pytest.mark.parametrize(("make", "owner"), MAKERS, ids=IDS)
def test_several_options_by_position_are_named_in_the_signatures_order(
    make: Callable[..., Any], owner: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        make(LEDGER, "gpt-4o-mini", "docs")
    second = "max_output_tokens" if make is li.BudgetCallbackHandler else "feature"
    assert caught.value.field == "model"
    assert f"pass model=..., {second}=... by keyword" in str(caught.value)
    assert f"{owner} takes its options by keyword" in str(caught.value)


@pytest.mark.parametrize(("make", "owner"), MAKERS, ids=IDS)
def test_more_positional_arguments_than_options_are_refused_by_name_too(
    make: Callable[..., Any], owner: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        make(LEDGER, *range(20))
    assert caught.value.field == "model"
    assert "given by position (20 after the ledger)" in str(caught.value)


@pytest.mark.parametrize(("make", "owner"), MAKERS, ids=IDS)
def test_options_by_keyword_are_still_taken(make: Callable[..., Any], owner: str) -> None:
    made = make(LEDGER, model="gpt-4o-mini", feature="f", user="u", max_output_tokens=5)
    assert (made.model, made.feature, made.user, made.max_output_tokens) == ("gpt-4o-mini", "f", "u", 5)
