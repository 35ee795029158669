"""A call re-entering a memory operation in flight (a summariser hook reading the window while
a put is summarising) uses the transcript as it stands and does not catch up from the store
(review s23 fix #2, newly reachable through 2aa2dff): catching up there took in another worker's
message (written to the store meanwhile, before the message being put) after that message, so
the memory's window order differed from the store's for good, sync and async alike. Now the
next operation takes the other worker's message in, in the store's order: the window is what a
fresh memory on the same store builds.

Real ``SimpleChatStore`` (and one handing back fresh copies, as a serialising store such as
Redis does) and LlamaIndex's ``MockLLM``; every async scenario runs under ``asyncio.wait_for`` so
that a regression to the old hang fails instead of hanging the suite.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.llms import ChatMessage, ChatResponse, MockLLM
from llama_index.core.storage.chat_store import SimpleChatStore
from pydantic import PrivateAttr

from llamaindex_tokenbudget.memory import SummaryChatMemory

GUARD_SECONDS = 20  # a hang guard only: a scenario takes milliseconds
KEY = "conversation"


class CopyingStore(SimpleChatStore):
    """Hands back fresh copies of its messages, as a store that serialises them does."""

    def get_messages(self, key: str) -> list[ChatMessage]:
        return [m.model_copy(deep=True) for m in super().get_messages(key)]

    async def aget_messages(self, key: str) -> list[ChatMessage]:
        return self.get_messages(key)


class Summariser(MockLLM):
    """Summarises; on its first call, another worker puts a message in the store, then a hook
    reads this memory's window (what it sees is kept)."""

    _memory: Any = PrivateAttr(default=None)
    _other: Any = PrivateAttr(default=None)
    _hook_saw: list[str] = PrivateAttr(default_factory=list)
    _armed: bool = PrivateAttr(default=True)

    def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        if self._armed:
            self._armed = False
            self._other.put(ChatMessage(role="user", content="W from worker 2"))
            self._hook_saw = names(self._memory.get())
        return ChatResponse(message=ChatMessage(role="assistant", content="Summary so far"))

    async def achat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        if self._armed:
            self._armed = False
            await self._other.aput(ChatMessage(role="user", content="W from worker 2"))
            self._hook_saw = names(await self._memory.aget())
        return ChatResponse(message=ChatMessage(role="assistant", content="Summary so far"))


def names(messages: list[ChatMessage]) -> list[str]:
    return [str(m.content).split()[0] for m in messages]


MESSAGES = [
    ChatMessage(role="user" if i % 2 == 0 else "assistant", content=f"m{i} " + "word " * 20)
    for i in range(11)
]


def setup(store_kind: str) -> tuple[SimpleChatStore, Summariser, SummaryChatMemory]:
    store = SimpleChatStore() if store_kind == "simple" else CopyingStore()
    llm = Summariser()
    memory = SummaryChatMemory(
        llm=llm, model="gpt-4o", max_tokens=300, reserve_output=0, chat_store=store, chat_store_key=KEY
    )
    other = SummaryChatMemory(
        llm=MockLLM(), model="gpt-4o", max_tokens=100_000, chat_store=store, chat_store_key=KEY
    )
    llm._memory, llm._other = memory, other
    return store, llm, memory


def fresh_window(store: SimpleChatStore) -> list[str]:
    fresh = SummaryChatMemory(
        llm=MockLLM(), model="gpt-4o", max_tokens=300, reserve_output=0, chat_store=store, chat_store_key=KEY
    )
    return names(fresh.get())


@pytest.mark.parametrize("store_kind", ["simple", "copying"])
def test_sync_the_window_keeps_the_stores_order(store_kind: str) -> None:
    store, llm, memory = setup(store_kind)
    for message in MESSAGES:
        memory.put(message)
    stored = names(store.get_messages(KEY))
    window = names(memory.get())
    assert stored.index("W") < stored.index("m8")  # the other worker's message came first
    assert window.index("W") < window.index("m8")
    assert window == fresh_window(store)
    assert "W" not in llm._hook_saw  # the re-entering read did not catch up from the store
    assert llm._hook_saw[-1] == "m8"  # the message being put, as the window stands


@pytest.mark.parametrize("store_kind", ["simple", "copying"])
def test_async_the_window_keeps_the_stores_order(store_kind: str) -> None:
    store, llm, memory = setup(store_kind)

    async def scenario() -> list[str]:
        for message in MESSAGES:
            await memory.aput(message)
        return names(await memory.aget())

    window = asyncio.run(asyncio.wait_for(scenario(), GUARD_SECONDS))
    stored = names(store.get_messages(KEY))
    assert stored.index("W") < stored.index("m8")
    assert window.index("W") < window.index("m8")
    assert window == fresh_window(store)
    assert "W" not in llm._hook_saw
    assert llm._hook_saw[-1] == "m8"
