"""``memory.get(initial_token_count=N)`` with N at or above the budget.

It is the same ``ContextOverflowError`` as a count that leaves a little room (code catching it
for "the history does not fit" sees both), and it names ``initial_token_count``, not
``reserve_output`` (which the caller, a chat engine, never set).
"""

from __future__ import annotations

import pytest
from llama_index.core.llms import ChatMessage

from llamaindex_tokenbudget import TokenBudgetChatMemory
from tokenbudget_core.errors import ContextOverflowError


def system(text: str) -> ChatMessage:
    return ChatMessage(role="system", content=text)


def user(text: str) -> ChatMessage:
    return ChatMessage(role="user", content=text)


def assistant(text: str) -> ChatMessage:
    return ChatMessage(role="assistant", content=text)


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("count", [190, 200, 500])
async def test_initial_token_count_past_the_budget_is_a_context_overflow(kind: str, count: int) -> None:
    memory = TokenBudgetChatMemory(model="gpt-4o", max_tokens=200)
    memory.put(system("sys " * 20))
    for i in range(6):
        memory.put(user(f"m{i} " + "w " * 10) if i % 2 == 0 else assistant(f"m{i} " + "w " * 10))
    with pytest.raises(ContextOverflowError) as raised:
        await memory.aget(initial_token_count=count) if kind == "async" else memory.get(
            initial_token_count=count
        )
    assert raised.value.field == "max_tokens"  # as a smaller overflow: the budget is what is short
    assert "reserve_output" not in str(raised.value)  # the caller never set it
    if count >= 200:
        assert "initial_token_count" in str(raised.value)
        assert raised.value.limit == 200
        assert raised.value.required > count


def test_initial_token_count_past_the_budget_of_an_empty_memory_is_a_context_overflow() -> None:
    memory = TokenBudgetChatMemory(model="gpt-4o", max_tokens=200)
    assert memory.get(initial_token_count=150) == []
    with pytest.raises(ContextOverflowError, match="initial_token_count"):
        memory.get(initial_token_count=1000)
