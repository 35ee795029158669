"""LlamaIndex memories on a real Redis chat store: the JSON round trip is not a replaced transcript.

An assistant message carrying OpenAI SDK tool-call objects in ``additional_kwargs`` (how
LlamaIndex's OpenAI integration builds them) comes back from Redis with dicts in their place.
The memory that put it must take it for its own message: no rebuild from the store, so no
recount and, for ``SummaryChatMemory``, no paid re-summarising of the whole transcript.
And a transcript another worker replaced is rebuilt even when its first and last messages
equal the old ones (fresh objects from Redis, compared by value).
"""

from __future__ import annotations

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
from openai.types.chat import ChatCompletionMessageToolCall
from pydantic import Field

from llamaindex_tokenbudget import SummaryChatMemory, TokenBudgetChatMemory
from llamaindex_tokenbudget._memory_base import BudgetMemory
from tokenbudget_core import TiktokenCounter

pytestmark = pytest.mark.integration


class CountingSummariser(MockLLM):
    """A summariser LLM that answers a fixed summary and keeps how often it was asked."""

    calls: list[int] = Field(default_factory=list, exclude=True)

    def __init__(self) -> None:
        super().__init__()

    @llm_chat_callback()
    def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        self.calls.append(len(messages))
        return ChatResponse(message=ChatMessage(role="assistant", content="They looked things up. " * 3))

    @llm_chat_callback()
    async def achat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        return self.chat(messages)


@asynccontextmanager
async def redis_stores(url: str) -> AsyncIterator[Callable[[], RedisChatStore]]:
    """Makes RedisChatStores on clients of their own (as other processes would have); closes them
    (the async ones in the test's own loop)."""
    clients: list[tuple[redis.Redis, redis.asyncio.Redis]] = []

    def new() -> RedisChatStore:
        clients.append((redis.Redis.from_url(url), redis.asyncio.Redis.from_url(url)))
        return RedisChatStore(redis_url=url, redis_client=clients[-1][0], aredis_client=clients[-1][1])

    try:
        yield new
    finally:
        for client, aclient in clients:
            client.close()
            await aclient.aclose()


def agent_turn(i: int, sdk_objects: bool) -> list[ChatMessage]:
    """A user question, the assistant's tool call, its result, the answer."""
    call = {"id": f"call_{i}", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    tool_calls = [ChatCompletionMessageToolCall(**call)] if sdk_objects else [call]  # type: ignore[arg-type]
    return [
        ChatMessage(role="user", content=f"question {i} " + "word " * 25),
        ChatMessage(role="assistant", content=None, additional_kwargs={"tool_calls": tool_calls}),
        ChatMessage(role="tool", content="result " * 25, additional_kwargs={"tool_call_id": f"call_{i}"}),
        ChatMessage(role="assistant", content=f"answer {i} " + "word " * 25),
    ]


async def run_agent(memory: BudgetMemory, sdk_objects: bool, kind: str) -> list[str]:
    """Twelve agent turns, the window read after each; the last window's texts."""
    for i in range(12):
        for message in agent_turn(i, sdk_objects):
            await memory.aput(message) if kind == "async" else memory.put(message)
        window = await memory.aget() if kind == "async" else memory.get()
    return [str(m.content) for m in window]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_sdk_tool_call_objects_do_not_make_the_summary_memory_summarise_again(
    clean_redis_url: str, kind: str
) -> None:
    summaries: dict[bool, int] = {}
    windows: dict[bool, list[str]] = {}
    async with redis_stores(clean_redis_url) as new_store:
        for sdk_objects in (False, True):
            summariser = CountingSummariser()
            memory = SummaryChatMemory(
                llm=summariser,
                model="gpt-4o",
                max_tokens=600,
                chat_store=new_store(),
                chat_store_key=f"conv-{sdk_objects}",
            )
            windows[sdk_objects] = await run_agent(memory, sdk_objects, kind)
            summaries[sdk_objects] = len(summariser.calls)
            assert len(memory.get_all()) == 48
    assert windows[True] == windows[False]
    # the same transcript costs the same summariser calls whatever form its tool calls took
    assert summaries[True] == summaries[False] > 0


async def test_sdk_tool_call_objects_are_counted_once(
    clean_redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted = 0
    original = TiktokenCounter.count_message

    def spy(self: TiktokenCounter, message: Any) -> Any:
        nonlocal counted
        counted += 1
        return original(self, message)

    async with redis_stores(clean_redis_url) as new_store:
        memory = TokenBudgetChatMemory(
            model="gpt-4o", max_tokens=600, chat_store=new_store(), chat_store_key="c"
        )
        monkeypatch.setattr(TiktokenCounter, "count_message", spy)
        for i in range(12):
            for message in agent_turn(i, sdk_objects=True):
                memory.put(message)
                memory.get()
        assert counted == 48  # each message once, none again after the store gave it back as dicts
        # a second worker on the same key builds the same window from the dicts
        other = TokenBudgetChatMemory(
            model="gpt-4o", max_tokens=600, chat_store=new_store(), chat_store_key="c"
        )
        assert [m.model_dump(mode="json") for m in other.get()] == [
            m.model_dump(mode="json") for m in memory.get()
        ]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_replaced_transcript_on_redis_is_rebuilt(clean_redis_url: str, kind: str) -> None:
    async def put(memory: BudgetMemory, role: str, text: str) -> None:
        message = ChatMessage(role=role, content=text)
        await memory.aput(message) if kind == "async" else memory.put(message)

    async def window(memory: BudgetMemory) -> list[str]:
        return [str(m.content) for m in (await memory.aget() if kind == "async" else memory.get())]

    async with redis_stores(clean_redis_url) as new_store:
        a, b = (
            TokenBudgetChatMemory(model="gpt-4o", max_tokens=2000, chat_store=new_store(), chat_store_key="c")
            for _ in "ab"
        )
        await put(a, "system", "You are a bank assistant.")
        await put(a, "user", "My card number is 4111 1111 1111 1111, block it")
        await put(a, "assistant", "Done.")
        assert len(await window(a)) == 3
        await b.areset() if kind == "async" else b.reset()
        new = ["You are a bank assistant.", "What are your opening hours?", "Done.", "thanks"]
        for role, text in zip(["system", "user", "assistant", "user"], new, strict=True):
            await put(b, role, text)
        assert await window(a) == await window(b) == new  # nothing of the deleted conversation
