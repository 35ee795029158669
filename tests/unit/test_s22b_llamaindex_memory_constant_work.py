"""LlamaIndex memories on a SimpleChatStore: each put and get does the same work at any length.

A long agent session puts and reads its memory thousands of times; if every operation looked at
every stored message, the session's memory cost would grow with the square of its length. The
store here keeps its messages in a list that counts how many of them anyone reads, so the test
counts the work instead of timing it. A transcript replaced or edited on the store (a new list,
a message inserted or deleted at an index) is still noticed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, SupportsIndex, overload

import pytest
from llama_index.core.base.llms.types import ChatResponse
from llama_index.core.llms import ChatMessage, MockLLM
from llama_index.core.llms.callbacks import llm_chat_callback
from llama_index.core.storage.chat_store import SimpleChatStore

from llamaindex_tokenbudget import SummaryChatMemory, TokenBudgetChatMemory
from llamaindex_tokenbudget._memory_base import BudgetMemory


class CountingList(list[ChatMessage]):
    """A list that counts the elements read from it (by index, slice or iteration)."""

    reads = 0

    @overload
    def __getitem__(self, index: SupportsIndex) -> ChatMessage: ...

    @overload
    def __getitem__(self, index: slice) -> list[ChatMessage]: ...

    def __getitem__(self, index: SupportsIndex | slice) -> ChatMessage | list[ChatMessage]:
        got = super().__getitem__(index)
        CountingList.reads += len(got) if isinstance(got, list) else 1
        return got

    def __iter__(self) -> Iterator[ChatMessage]:
        for message in super().__iter__():
            CountingList.reads += 1
            yield message


class Summariser(MockLLM):
    """A summariser LLM with a fixed answer."""

    def __init__(self) -> None:
        super().__init__()

    @llm_chat_callback()
    def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        return ChatResponse(message=ChatMessage(role="assistant", content="They talked. " * 3))

    @llm_chat_callback()
    async def achat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        return self.chat(messages)


def turn(i: int) -> ChatMessage:
    return ChatMessage(role="user" if i % 2 == 0 else "assistant", content=f"message {i} " + "word " * 10)


def counting_store() -> SimpleChatStore:
    store = SimpleChatStore()
    store.set_messages("conv", CountingList())  # SimpleChatStore keeps (and appends to) this list
    return store


def memories(store: SimpleChatStore, kind: str) -> list[BudgetMemory]:
    """Two memories on one key (two request handlers of one process), as the kind asks."""
    if kind == "summary":
        return [
            SummaryChatMemory(
                llm=Summariser(), model="gpt-4o", max_tokens=600, chat_store=store, chat_store_key="conv"
            )
            for _ in "ab"
        ]
    return [
        TokenBudgetChatMemory(model="gpt-4o", max_tokens=600, chat_store=store, chat_store_key="conv")
        for _ in "ab"
    ]


async def reads_for_ten_turns(mems: list[BudgetMemory], start: int, mode: str) -> int:
    """Elements read from the store's list by ten turns (a put, then a get, alternately by the
    memories) starting at message ``start``."""
    before = CountingList.reads
    for i in range(start, start + 10):
        memory = mems[i % len(mems)]
        if mode == "async":
            await memory.aput(turn(i))
            await memory.aget()
        else:
            memory.put(turn(i))
            memory.get()
    return CountingList.reads - before


async def fill(mems: list[BudgetMemory], start: int, end: int, mode: str) -> None:
    for i in range(start, end):
        memory = mems[i % len(mems)]
        if mode == "async":
            await memory.aput(turn(i))
        else:
            memory.put(turn(i))
    for memory in mems:
        await memory.aget() if mode == "async" else memory.get()


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("kind", ["window", "summary"])
async def test_put_and_get_read_as_many_stored_messages_at_any_length(mode: str, kind: str) -> None:
    store = counting_store()
    mems = memories(store, kind)
    await fill(mems, 0, 20, mode)
    early = await reads_for_ten_turns(mems, 20, mode)
    await fill(mems, 30, 600, mode)
    late = await reads_for_ten_turns(mems, 600, mode)
    assert len(store.get_messages("conv")) == 610
    # the same work for a turn at message 600 as at message 20 (it was ~20x more before)
    assert late <= early <= 10 * 4
    # and the windows are right
    assert [m.content for m in mems[0].get()] == [m.content for m in mems[1].get()]
    assert mems[0].get()[-1].content == turn(609).content


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(
    "edit",
    ["set_messages", "delete_then_add", "insert_at_0", "delete_last_then_add", "reset_then_put"],
)
async def test_a_transcript_edited_on_the_store_is_still_noticed(mode: str, edit: str) -> None:
    store = counting_store()
    a, b = memories(store, "window")
    for i in range(6):
        await a.aput(turn(i)) if mode == "async" else a.put(turn(i))
    assert len(await a.aget() if mode == "async" else a.get()) == 6
    other = ChatMessage(role="user", content="edited by another worker")
    if edit == "set_messages":  # a new list, same first and last messages
        store.set_messages("conv", [turn(0), other, *store.get_messages("conv")[2:]])
    elif edit == "delete_then_add":  # a middle message deleted, one appended: same length
        store.delete_message("conv", 2)
        store.add_message("conv", other)
    elif edit == "insert_at_0":
        store.add_message("conv", other, idx=0)
    elif edit == "delete_last_then_add":
        store.delete_last_message("conv")
        store.add_message("conv", other)
    else:
        b.reset()
        b.put(turn(0))
        b.put(other)
    expected = [m.content for m in store.get_messages("conv")]
    assert [m.content for m in (await a.aget() if mode == "async" else a.get())] == expected
    assert [m.content for m in (await b.aget() if mode == "async" else b.get())] == expected
