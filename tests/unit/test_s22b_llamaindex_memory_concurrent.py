"""One LlamaIndex memory used by concurrent calls: a get() beside a put() sees each message once.

An async server handles a user's message with ``gather(memory.aput(reply), memory.aget())``, or
a threaded one runs a put() and a get() of one conversation at the same time. The chat store
here acknowledges a write only after a few more turns of the event loop (or a short wait in a
thread), as a network store does (Redis: RPUSH, then EXPIRE). No window may show a message
twice, and a summary memory must not rebuild (re-summarise the whole transcript with paid LLM
calls) because of the overlap: it asks its summariser as often as when the calls run one by one.
(The same with LlamaIndex's RedisChatStore on a real Redis:
``tests/integration/test_s22b_llamaindex_memory_redis_concurrent.py``.)
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatResponse
from llama_index.core.llms import ChatMessage, MockLLM
from llama_index.core.llms.callbacks import llm_chat_callback
from llama_index.core.storage.chat_store import SimpleChatStore
from pydantic import Field

from llamaindex_tokenbudget import SummaryChatMemory, TokenBudgetChatMemory
from llamaindex_tokenbudget._memory_base import BudgetMemory


class SlowAckStore(SimpleChatStore):
    """A SimpleChatStore whose writes are applied at once but acknowledged later, and whose reads
    come back after a turn of the loop: what a networked store's client does."""

    async def async_add_message(self, key: str, message: ChatMessage, idx: int | None = None) -> None:
        self.add_message(key, message, idx)  # the server applied the write...
        for _ in range(5):
            await asyncio.sleep(0)  # ...its reply is still on the way

    async def aget_messages(self, key: str) -> list[ChatMessage]:
        await asyncio.sleep(0)
        return list(self.get_messages(key))

    def add_message(self, key: str, message: ChatMessage, idx: int | None = None) -> None:
        super().add_message(key, message, idx)
        if threading.current_thread() is not threading.main_thread():
            time.sleep(0.0005)  # (a thread's write: the reply takes a moment, others run meanwhile)


class CountingSummariser(MockLLM):
    """A summariser LLM that answers a fixed summary and counts how often it was asked."""

    calls: list[int] = Field(default_factory=list, exclude=True)

    def __init__(self) -> None:
        super().__init__()

    @llm_chat_callback()
    def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        self.calls.append(len(messages))
        return ChatResponse(message=ChatMessage(role="assistant", content="They talked. " * 3))

    @llm_chat_callback()
    async def achat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        await asyncio.sleep(0)
        return self.chat(messages)


def turn(i: int) -> ChatMessage:
    return ChatMessage(role="user" if i % 2 == 0 else "assistant", content=f"message {i} " + "word " * 20)


def new_memory(kind: str, summariser: CountingSummariser) -> BudgetMemory:
    if kind == "summary":
        return SummaryChatMemory(
            llm=summariser, model="gpt-4o", max_tokens=500, chat_store=SlowAckStore(), chat_store_key="c"
        )
    return TokenBudgetChatMemory(
        model="gpt-4o", max_tokens=500, chat_store=SlowAckStore(), chat_store_key="c"
    )


def contents(window: list[ChatMessage]) -> list[str]:
    return [str(m.content) for m in window]


async def conversation(kind: str, concurrent: bool) -> tuple[list[list[str]], int, list[str]]:
    """40 turns of put(message) beside get(); the windows read, the summariser's calls and the
    last window."""
    summariser = CountingSummariser()
    memory = new_memory(kind, summariser)
    windows: list[list[str]] = []

    async def read_a_little_later() -> list[ChatMessage]:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return await memory.aget()

    for i in range(40):
        if concurrent:
            _, window = await asyncio.gather(memory.aput(turn(i)), read_a_little_later())
        else:
            await memory.aput(turn(i))
            window = await memory.aget()
        windows.append(contents(window))
    assert len(memory.get_all()) == 40
    return windows, len(summariser.calls), contents(await memory.aget())


@pytest.mark.parametrize("kind", ["window", "summary"])
async def test_aget_during_aput_shows_each_message_once_and_does_not_resummarise(kind: str) -> None:
    windows, calls, last = await conversation(kind, concurrent=True)
    assert [w for w in windows if len(w) != len(set(w))] == []  # no window shows a message twice
    one_by_one_windows, one_by_one_calls, one_by_one_last = await conversation(kind, concurrent=False)
    assert calls == one_by_one_calls  # no rebuild: as many summariser calls as one by one
    assert last == one_by_one_last
    assert windows[-1] == one_by_one_windows[-1]


@pytest.mark.parametrize("kind", ["window", "summary"])
async def test_two_aputs_at_once_keep_each_message_once(kind: str) -> None:
    summariser = CountingSummariser()
    memory = new_memory(kind, summariser)
    for i in range(0, 40, 2):
        await asyncio.gather(memory.aput(turn(i)), memory.aput(turn(i + 1)))
        window = contents(await memory.aget())
        assert len(window) == len(set(window))
    assert contents(memory.get_all()) == [str(turn(i).content) for i in range(40)]
    fresh = new_memory(kind, CountingSummariser())
    fresh.set(memory.get_all())
    assert contents(await memory.aget())[-6:] == contents(fresh.get())[-6:]
    if kind == "summary":
        one_by_one = CountingSummariser()
        sequential = new_memory(kind, one_by_one)
        for i in range(40):
            await sequential.aput(turn(i))
            if i % 2:
                await sequential.aget()
        assert len(summariser.calls) == len(one_by_one.calls)


@pytest.mark.parametrize("kind", ["window", "summary"])
def test_get_in_another_thread_during_put_shows_each_message_once(kind: str) -> None:
    summariser = CountingSummariser()
    memory = new_memory(kind, summariser)
    stop = threading.Event()
    duplicated: list[list[str]] = []
    reads = 0
    errors: list[Exception] = []

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            try:
                window = contents(memory.get())
            except Exception as e:  # noqa: BLE001 (reported by the test, not lost in the thread)
                errors.append(e)
                return
            reads += 1
            if len(window) != len(set(window)):
                duplicated.append(window)

    def writer() -> None:
        try:
            for i in range(60):
                memory.put(turn(i))
        except Exception as e:  # noqa: BLE001 (reported by the test, not lost in the thread)
            errors.append(e)

    threads = [threading.Thread(target=reader), threading.Thread(target=writer)]
    for t in threads:
        t.start()
    threads[1].join()
    stop.set()
    threads[0].join()
    assert errors == []
    assert reads > 0
    assert duplicated == []
    assert contents(memory.get_all()) == [str(turn(i).content) for i in range(60)]
    sequential_summariser = CountingSummariser()
    sequential = new_memory(kind, sequential_summariser)
    for i in range(60):
        sequential.put(turn(i))
    assert contents(memory.get()) == contents(sequential.get())
