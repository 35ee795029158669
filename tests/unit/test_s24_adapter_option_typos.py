"""A misspelt option of a budget adapter is named, with the closest one, never a bare TypeError.

``langchain_tokenbudget.BudgetCallbackHandler(usr=...)`` used to raise a bare ``TypeError``
naming the private ``_BudgetHandler.__init__()``; ``BudgetMiddleware(max_usd=...)`` and
``llamaindex_tokenbudget.BudgetCallbackHandler(usr=...)`` bare ``TypeError`` s too, where
``CostEventHandler(usr=...)`` named the option and the fix.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

import langchain_tokenbudget as lc
import llamaindex_tokenbudget as li
from tokenbudget_core.errors import InvalidInputError, TokenBudgetError
from tokenbudget_core.ledger import Ledger

LEDGER = Ledger("memory://")

TYPOS: list[tuple[Callable[..., Any], dict[str, Any], str, str]] = [
    (lc.BudgetCallbackHandler, {"usr": "ada"}, "BudgetCallbackHandler", "user"),
    (lc.AsyncBudgetCallbackHandler, {"usr": "ada"}, "AsyncBudgetCallbackHandler", "user"),
    (lc.BudgetCallbackHandler, {"max_tokens": 10}, "BudgetCallbackHandler", "max_output_tokens"),
    (lc.BudgetMiddleware, {"max_usd": "1"}, "BudgetMiddleware", "max_run_usd"),
    (lc.BudgetMiddleware, {"on_exceed": "end"}, "BudgetMiddleware", "on_exceeded"),
    (li.BudgetCallbackHandler, {"usr": "ada"}, "BudgetCallbackHandler", "user"),
    (li.BudgetCallbackHandler, {"featur": "docs"}, "BudgetCallbackHandler", "feature"),
]


@pytest.mark.parametrize(("make", "typo", "owner", "meant"), TYPOS)
def test_a_misspelt_option_is_named_with_the_closest_one(
    make: Callable[..., Any], typo: dict[str, Any], owner: str, meant: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        make(LEDGER, model="gpt-4o-mini", **typo)
    error = caught.value
    assert isinstance(error, TokenBudgetError)
    (name,) = typo
    assert error.field == name
    article = "an" if owner[0] in "AEIOU" else "a"
    assert f"is not {article} {owner} option" in str(error)
    assert f"did you mean {meant!r}" in str(error)
    assert "_BudgetHandler" not in str(error)


@pytest.mark.parametrize(
    "make",
    [lc.BudgetCallbackHandler, lc.AsyncBudgetCallbackHandler, lc.BudgetMiddleware, li.BudgetCallbackHandler],
)
def test_every_option_of_the_signature_is_still_taken(make: Callable[..., Any]) -> None:
    """The typed signature users' IDEs show is the one the constructor takes (no option refused)."""
    params = inspect.signature(make).parameters
    options = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert {"model", "feature", "user", "max_output_tokens"} <= set(options)
    made = make(LEDGER, model="gpt-4o-mini", feature="f", user="u", max_output_tokens=5)
    assert (made.model, made.feature, made.user, made.max_output_tokens) == ("gpt-4o-mini", "f", "u", 5)
