"""ContextWindowMiddleware names a misspelt or positional option (an ``InvalidInputError`` with the
closest option / the keyword to use), as BudgetMiddleware does, never a bare ``TypeError``."""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

from langchain_tokenbudget import ContextWindowMiddleware
from tokenbudget_core.errors import InvalidInputError, TokenBudgetError


def _make(*args: Any, **kwargs: Any) -> ContextWindowMiddleware:
    return ContextWindowMiddleware(*args, **kwargs)


def test_a_misspelt_option_is_named_with_the_closest_one() -> None:
    with pytest.raises(InvalidInputError) as caught:
        _make("gpt-4o", max_token=1000)
    error = caught.value
    assert isinstance(error, TokenBudgetError)
    assert not isinstance(error, TypeError)
    assert (error.field, error.value) == ("max_token", 1000)
    assert "did you mean 'max_tokens'" in str(error)


def test_a_misspelt_option_beside_max_tokens_is_named() -> None:
    with pytest.raises(InvalidInputError) as caught:
        _make("gpt-4o", max_tokens=1000, stratgy="summarise")
    assert caught.value.field == "stratgy"
    assert "did you mean 'strategy'" in str(caught.value)


def test_an_option_passed_by_position_is_named_with_the_keyword() -> None:
    with pytest.raises(InvalidInputError) as caught:
        _make("gpt-4o", 1000)
    error = caught.value
    assert not isinstance(error, TypeError)
    assert (error.field, error.value) == ("max_tokens", 1000)
    assert "max_tokens=..." in str(error)


def test_two_positional_options_name_both_keywords() -> None:
    with pytest.raises(InvalidInputError) as caught:
        _make("gpt-4o", 1000, 100)
    assert caught.value.field == "max_tokens"
    assert "max_tokens=..., reserve_output=..." in str(caught.value)


def test_max_tokens_missing_is_named() -> None:
    with pytest.raises(InvalidInputError) as caught:
        _make("gpt-4o")
    assert caught.value.field == "max_tokens"


def test_keyword_options_still_work_in_an_agent() -> None:
    middleware = ContextWindowMiddleware("gpt-4o", max_tokens=2_000, reserve_output=100, pin_first_user=True)
    agent = create_agent(GenericFakeChatModel(messages=iter(["Hi!"])), middleware=[middleware])
    assert agent.invoke({"messages": [("user", "hello")]})["messages"][-1].content == "Hi!"
