"""A sync read of a memory made from inside one of its async operations in flight (review s23d
#4) re-enters that operation, as the documented re-entrant read does: a summariser whose
``achat`` is ``CustomLLM``'s default (it calls the sync ``chat``) and whose hook calls ``get()``,
or a hook in an async ``achat`` reading the sync ``summary`` property, during an ``aput()``.
It uses the transcript as it stands and does not read the store. Before, only a sync operation
in flight was noticed: the read caught up from the store (taking in another worker's message)
with a sync append inside the async summary and failed with a misleading "use aappend()
instead of append()", dropping the loaded window.

Real ``SummaryChatMemory`` over a ``SimpleChatStore`` shared with a second memory (another
worker); the summarisers are LlamaIndex ``MockLLM`` s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from llama_index.core.llms import ChatMessage, ChatResponse, MockLLM
from llama_index.core.storage.chat_store import SimpleChatStore
from pydantic import PrivateAttr

from llamaindex_tokenbudget.memory import SummaryChatMemory
from tokenbudget_core.errors import TokenBudgetError

KEY = "conversation"
MESSAGES = [
    ChatMessage(role="user" if i % 2 == 0 else "assistant", content=f"m{i} " + "word " * 20)
    for i in range(11)
]
WORKER = ChatMessage(role="user", content="W from worker 2")


def names(messages: Sequence[ChatMessage]) -> list[str]:
    return [str(m.content).split()[0] for m in messages]


class SyncHookSummariser(MockLLM):
    """Overrides only ``chat``: its ``achat`` is ``CustomLLM``'s, which calls it. On its first
    summary another worker puts a message, then the hook reads the memory with ``get()``."""

    _memory: Any = PrivateAttr(default=None)
    _other: Any = PrivateAttr(default=None)
    _armed: bool = PrivateAttr(default=True)
    _saw: Any = PrivateAttr(default=None)
    _error: TokenBudgetError | None = PrivateAttr(default=None)

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        if self._armed:
            self._armed = False
            self._other.put(WORKER)
            try:
                self._saw = self._memory.get()
            except TokenBudgetError as e:  # (the memory's summary falls back when its summariser fails)
                self._error = e
        return ChatResponse(message=ChatMessage(role="assistant", content="Summary so far"))


class SummaryPropertySummariser(MockLLM):
    """An async ``achat`` whose hook, after another worker's put, reads the sync ``summary``."""

    _memory: Any = PrivateAttr(default=None)
    _other: Any = PrivateAttr(default=None)
    _armed: bool = PrivateAttr(default=True)
    _saw: Any = PrivateAttr(default="not read")
    _error: TokenBudgetError | None = PrivateAttr(default=None)

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        if self._armed:
            self._armed = False
            await self._other.aput(WORKER)
            try:
                self._saw = self._memory.summary
            except TokenBudgetError as e:
                self._error = e
        return ChatResponse(message=ChatMessage(role="assistant", content="Summary so far"))


def memories(llm: MockLLM) -> tuple[SummaryChatMemory, SimpleChatStore]:
    store = SimpleChatStore()
    memory = SummaryChatMemory(
        llm=llm, model="gpt-4o", max_tokens=300, reserve_output=0, chat_store=store, chat_store_key=KEY
    )
    other = SummaryChatMemory(
        llm=MockLLM(), model="gpt-4o", max_tokens=100_000, chat_store=store, chat_store_key=KEY
    )
    llm._memory, llm._other = memory, other
    return memory, store


async def put_all(memory: SummaryChatMemory) -> list[str]:
    for message in MESSAGES:
        await memory.aput(message)
    return names(await memory.aget())


def fresh_window(store: SimpleChatStore) -> list[str]:
    fresh = SummaryChatMemory(
        llm=MockLLM(), model="gpt-4o", max_tokens=300, reserve_output=0, chat_store=store, chat_store_key=KEY
    )
    return names(fresh.get())


def test_a_sync_get_from_a_summariser_inside_aput_sees_the_window_as_it_stands() -> None:
    llm = SyncHookSummariser()
    memory, store = memories(llm)
    window = asyncio.run(put_all(memory))
    assert llm._error is None  # before: InvalidInputError "use aappend() instead of append()"
    saw = names(llm._saw)
    assert saw, "the hook read the window"
    assert "W" not in saw  # the store was not read: the worker's message comes with the next operation
    assert saw[-1] == "m8"  # the message being put is in
    assert "W" in names(store.get_messages(KEY))
    assert window == fresh_window(store)  # in the store's order


def test_the_summary_property_read_inside_aput_does_not_read_the_store() -> None:
    llm = SummaryPropertySummariser()
    memory, store = memories(llm)
    window = asyncio.run(put_all(memory))
    assert llm._error is None  # before: InvalidInputError "use aappend() instead of append()"
    assert llm._saw is None  # no summary yet: the first one is being made
    assert window == fresh_window(store)


def test_a_sync_get_outside_any_operation_still_takes_in_another_workers_message() -> None:
    store = SimpleChatStore()
    memory = SummaryChatMemory(llm=MockLLM(), model="gpt-4o", chat_store=store, chat_store_key=KEY)
    asyncio.run(memory.aput(MESSAGES[0]))
    other = SummaryChatMemory(llm=MockLLM(), model="gpt-4o", chat_store=store, chat_store_key=KEY)
    other.put(WORKER)
    assert names(memory.get()) == ["m0", "W"]
