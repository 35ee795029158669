"""A window budget above the counting model's context window is refused wherever a window is
made, not only through LlamaIndex's ``from_defaults``: such a window never trims, and the model
it serves overflows (the limit was another model's, or a typo)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import HumanMessage
from llama_index.core.llms import MockLLM

from langchain_tokenbudget import SummaryChatMessageHistory, TokenBudgetChatMessageHistory
from llamaindex_tokenbudget import SummaryChatMemory, TokenBudgetChatMemory
from tokenbudget_core import ConversationWindow
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.registry import default_registry

WINDOW = default_registry().get("gpt-4o").context_window
assert WINDOW is not None


def _writer() -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter(["summary"]))


MAKERS: dict[str, Callable[[int], object]] = {
    "core ConversationWindow": lambda n: ConversationWindow("gpt-4o", max_tokens=n),
    "LangChain TokenBudgetChatMessageHistory": lambda n: TokenBudgetChatMessageHistory(
        model="gpt-4o", max_tokens=n
    ),
    "LangChain SummaryChatMessageHistory": lambda n: SummaryChatMessageHistory(
        summariser=_writer(), model="gpt-4o", max_tokens=n
    ),
    "LlamaIndex TokenBudgetChatMemory": lambda n: TokenBudgetChatMemory(model="gpt-4o", max_tokens=n),
    "LlamaIndex SummaryChatMemory": lambda n: SummaryChatMemory(model="gpt-4o", max_tokens=n, llm=MockLLM()),
}


@pytest.mark.parametrize("make", list(MAKERS.values()), ids=list(MAKERS))
def test_a_budget_above_the_models_window_is_refused_naming_max_tokens(make: Callable[[int], object]) -> None:
    with pytest.raises(InvalidInputError) as info:
        make(WINDOW + 1)
    assert info.value.field == "max_tokens"
    assert str(WINDOW) in str(info.value)
    assert "gpt-4o" in str(info.value)


@pytest.mark.parametrize("make", list(MAKERS.values()), ids=list(MAKERS))
def test_the_whole_window_is_still_a_valid_budget(make: Callable[[int], object]) -> None:
    make(WINDOW)  # the boundary itself is the model's window: allowed


def test_a_history_that_never_trims_is_not_silently_built() -> None:
    # Before: a 1M-token budget on a 128k model kept every message, so the prompt overflowed
    # the model at its first long conversation instead of failing where it was configured.
    history = TokenBudgetChatMessageHistory(model="gpt-4o", max_tokens=WINDOW)
    history.add_messages([HumanMessage("hello")])
    assert [m.content for m in history.messages] == ["hello"]
