"""One LlamaIndex memory on LlamaIndex's RedisChatStore, used by concurrent calls (a real Redis).

``RedisChatStore(ttl=...)`` writes a message with RPUSH and then sets the key's expiry in a
second round trip: a get() running beside the put() reads the list in between. No window may
show a message twice, and a summary memory must ask its summariser as often as when the calls
run one by one (no rebuild: no paid re-summarising of the whole transcript).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis
import redis.asyncio
from llama_index.core.base.llms.types import ChatResponse
from llama_index.core.llms import ChatMessage, MockLLM
from llama_index.core.llms.callbacks import llm_chat_callback
from llama_index.storage.chat_store.redis import RedisChatStore
from pydantic import Field

from llamaindex_tokenbudget import SummaryChatMemory, TokenBudgetChatMemory
from llamaindex_tokenbudget._memory_base import BudgetMemory

pytestmark = pytest.mark.integration


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
        return self.chat(messages)


@asynccontextmanager
async def redis_stores(url: str) -> AsyncIterator[Callable[[], RedisChatStore]]:
    """Makes RedisChatStores with a TTL on clients of their own; closes them in the test's loop."""
    clients: list[tuple[redis.Redis, redis.asyncio.Redis]] = []

    def new() -> RedisChatStore:
        clients.append((redis.Redis.from_url(url), redis.asyncio.Redis.from_url(url)))
        return RedisChatStore(
            redis_url=url, redis_client=clients[-1][0], aredis_client=clients[-1][1], ttl=3600
        )

    try:
        yield new
    finally:
        for client, aclient in clients:
            client.close()
            await aclient.aclose()


def turn(i: int) -> ChatMessage:
    return ChatMessage(role="user" if i % 2 == 0 else "assistant", content=f"message {i} " + "word " * 20)


def new_memory(kind: str, store: RedisChatStore, key: str, summariser: CountingSummariser) -> BudgetMemory:
    if kind == "summary":
        return SummaryChatMemory(
            llm=summariser, model="gpt-4o", max_tokens=500, chat_store=store, chat_store_key=key
        )
    return TokenBudgetChatMemory(model="gpt-4o", max_tokens=500, chat_store=store, chat_store_key=key)


def contents(window: list[ChatMessage]) -> list[str]:
    return [str(m.content) for m in window]


@pytest.mark.parametrize("kind", ["window", "summary"])
async def test_aget_beside_aput_on_redis_shows_each_message_once(clean_redis_url: str, kind: str) -> None:
    async with redis_stores(clean_redis_url) as new_store:
        results: dict[bool, tuple[list[list[str]], int]] = {}
        for concurrent in (True, False):
            summariser = CountingSummariser()
            memory = new_memory(kind, new_store(), f"conv-{concurrent}", summariser)
            windows: list[list[str]] = []

            async def read_after(turns: int, memory: BudgetMemory = memory) -> list[ChatMessage]:
                for _ in range(turns):  # (the read lands at varied points of the put's round trips)
                    await asyncio.sleep(0)
                return await memory.aget()

            for i in range(40):
                if concurrent:
                    _, window = await asyncio.gather(memory.aput(turn(i)), read_after(i % 8))
                    await memory.aget()  # (as the next request would)
                else:
                    await memory.aput(turn(i))
                    window = await memory.aget()
                windows.append(contents(window))
            assert contents(await memory.aget_all()) == [str(turn(i).content) for i in range(40)]
            windows.append(contents(await memory.aget()))
            results[concurrent] = (windows, len(summariser.calls))
    windows, calls = results[True]
    assert [w for w in windows if len(w) != len(set(w))] == []
    assert windows[-1] == results[False][0][-1]
    assert calls == results[False][1]


@pytest.mark.parametrize("kind", ["window", "summary"])
async def test_get_in_another_thread_beside_put_on_redis_shows_each_message_once(
    clean_redis_url: str, kind: str
) -> None:
    async with redis_stores(clean_redis_url) as new_store:
        summariser = CountingSummariser()
        memory = new_memory(kind, new_store(), "threads", summariser)
        stop = threading.Event()
        duplicated: list[list[str]] = []
        errors: list[Exception] = []
        reads = 0

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

        thread = threading.Thread(target=reader)
        thread.start()
        try:
            for i in range(80):
                memory.put(turn(i))
        finally:
            stop.set()
            thread.join()
        assert errors == []
        assert reads > 0
        assert duplicated == []
        assert contents(memory.get_all()) == [str(turn(i).content) for i in range(80)]
        one_by_one = CountingSummariser()
        sequential = new_memory(kind, new_store(), "sequential", one_by_one)
        for i in range(80):
            sequential.put(turn(i))
        assert contents(memory.get()) == contents(sequential.get())
        assert len(summariser.calls) == len(one_by_one.calls)
