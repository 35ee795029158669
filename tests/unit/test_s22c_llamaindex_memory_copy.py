"""Copies of a memory are memories of their own: ``model_copy(update=...)`` applies the new
options (it used to share the original's loaded window and ignore a new ``max_tokens``), a
shallow copy reads the same chat store, and a deep copy (``copy.deepcopy``, which used to fail)
a copy of it."""

from __future__ import annotations

import copy

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.llms import ChatMessage

from llamaindex_tokenbudget.memory import TokenBudgetChatMemory
from tokenbudget_core.errors import InvalidInputError


def _memory() -> TokenBudgetChatMemory:
    memory = TokenBudgetChatMemory(model="gpt-4o", max_tokens=2_000, reserve_output=0)
    for i in range(20):
        memory.put(ChatMessage(role="user" if i % 2 == 0 else "assistant", content=f"m{i} " + "word " * 20))
    return memory


def test_a_copy_with_a_smaller_budget_windows_as_a_new_memory_with_it() -> None:
    memory = _memory()
    small = memory.model_copy(update={"max_tokens": 100})
    fresh = TokenBudgetChatMemory(
        model="gpt-4o", max_tokens=100, reserve_output=0, chat_store=memory.chat_store
    )
    assert [m.content for m in small.get()] == [m.content for m in fresh.get()]
    assert len(small.get()) < len(memory.get()) == 20
    with pytest.raises(InvalidInputError, match="max_tokens"):
        memory.model_copy(update={"max_tokens": -1})  # checked as the constructor checks it


def test_shallow_copies_share_the_store_and_deep_copies_do_not() -> None:
    memory = _memory()
    shallow, deep = copy.copy(memory), copy.deepcopy(memory)
    deep.put(ChatMessage(role="user", content="only in the deep copy"))
    assert "only in the deep copy" not in [m.content for m in memory.get_all()]
    shallow.put(ChatMessage(role="user", content="in both"))
    assert memory.get()[-1].content == "in both"
    assert deep.get()[-1].content == "only in the deep copy"
