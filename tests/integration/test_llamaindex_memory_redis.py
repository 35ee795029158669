"""LlamaIndex memories on a real Redis through LlamaIndex's RedisChatStore.

The transcript lives in Redis; a new memory object on the same store and key rebuilds the
same window from it. (Named ``..._redis`` because ``tests/unit/test_llamaindex_memory.py``
exists and test modules need unique basenames under pytest's default import mode.)
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
import redis.asyncio
from llama_index.core.base.llms.types import ChatResponse, ToolCallBlock
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.llms import ChatMessage, MockLLM
from llama_index.core.llms.callbacks import llm_chat_callback
from llama_index.storage.chat_store.redis import RedisChatStore
from pydantic import Field

from llamaindex_tokenbudget import SummaryChatMemory, TokenBudgetChatMemory, to_core_messages
from tokenbudget_core import TokenCounter

pytestmark = pytest.mark.integration

COUNTER = TokenCounter.for_model("gpt-4o")
SYSTEM = ChatMessage(role="system", content="You are a terse assistant. " * 4)


class RecordingLLM(MockLLM):
    """Records what chat received; answers a fixed text."""

    reply: str = ""
    received: list[list[ChatMessage]] = Field(default_factory=list, exclude=True)

    def __init__(self, reply: str) -> None:
        super().__init__()
        self.reply = reply

    @llm_chat_callback()
    def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        self.received.append(list(messages))
        return ChatResponse(message=ChatMessage(role="assistant", content=self.reply))


def redis_store(url: str, aredis_client: redis.asyncio.Redis | None = None) -> RedisChatStore:
    """A RedisChatStore on clients of its own (as a second process would have)."""
    return RedisChatStore(redis_url=url, redis_client=redis.Redis.from_url(url), aredis_client=aredis_client)


def history(turns: int) -> list[ChatMessage]:
    """Turns with both tool-call shapes: ToolCallBlock and OpenAI-style additional_kwargs."""
    out = [SYSTEM]
    for t in range(turns):
        out.append(ChatMessage(role="user", content=f"turn {t}: " + "please look this up " * 4))
        if t % 2:
            call = ToolCallBlock(tool_call_id=f"b{t}", tool_name="lookup", tool_kwargs={"q": t})
            out.append(ChatMessage(role="assistant", blocks=[call]))
        else:
            fn = {"name": "lookup", "arguments": f'{{"q": {t}}}'}
            calls = [{"id": f"b{t}", "type": "function", "function": fn}]
            out.append(ChatMessage(role="assistant", content="", additional_kwargs={"tool_calls": calls}))
        out.append(
            ChatMessage(role="tool", content="fact " * 10, additional_kwargs={"tool_call_id": f"b{t}"})
        )
        out.append(ChatMessage(role="assistant", content="done " * 8))
    return out


def dumped(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    return [m.model_dump() for m in messages]


def test_a_new_memory_on_the_same_redis_key_sees_the_same_window(
    clean_redis_url: str, redis_client: Any
) -> None:
    first = TokenBudgetChatMemory(
        chat_store=redis_store(clean_redis_url), chat_store_key="user:1", max_tokens=300
    )
    first.put_messages(history(12))
    assert redis_client.llen("user:1") == 49
    second = TokenBudgetChatMemory(
        chat_store=redis_store(clean_redis_url), chat_store_key="user:1", max_tokens=300
    )
    window = second.get()
    assert dumped(window) == dumped(first.get())
    assert 4 < len(window) < 49
    assert window[0].role == "system"
    assert int(COUNTER.count_messages(to_core_messages(window))) <= 300
    assert dumped(second.get_all()) == dumped(history(12))  # tool calls of both shapes round-trip
    assert TokenBudgetChatMemory(chat_store=second.chat_store, chat_store_key="user:2").get() == []


def test_a_chat_engine_restarted_every_turn_sends_what_a_long_lived_one_sends(clean_redis_url: str) -> None:
    def engine(llm: MockLLM, key: str) -> SimpleChatEngine:
        memory = TokenBudgetChatMemory(
            chat_store=redis_store(clean_redis_url),
            chat_store_key=key,
            max_tokens=400,
            prefix_messages=[SYSTEM],
        )
        return SimpleChatEngine.from_defaults(llm=llm, memory=memory, prefix_messages=[SYSTEM])

    long_lived_llm, restarted_llm = RecordingLLM("ok " * 20), RecordingLLM("ok " * 20)
    long_lived = engine(long_lived_llm, "long-lived")
    for i in range(12):
        question = f"question {i}: " + "tell me more " * 6
        long_lived.chat(question)
        engine(restarted_llm, "restarted").chat(question)  # a new memory, rebuilt from Redis
    assert [dumped(r) for r in restarted_llm.received] == [dumped(r) for r in long_lived_llm.received]
    last = restarted_llm.received[-1]
    assert len(last) < 24
    assert last[1].content.startswith("question 0:")
    assert int(COUNTER.count_messages(to_core_messages(last))) <= 400


async def test_async_twins_on_redis(clean_redis_url: str, redis_client: Any) -> None:
    aredis_client = redis.asyncio.Redis.from_url(clean_redis_url)  # closed here, in this test's loop
    store = redis_store(clean_redis_url, aredis_client)
    try:
        memory = TokenBudgetChatMemory(chat_store=store, chat_store_key="a", max_tokens=250)
        for message in history(8):
            await memory.aput(message)
        other = TokenBudgetChatMemory(chat_store=store, chat_store_key="a", max_tokens=250)
        assert dumped(await other.aget()) == dumped(await memory.aget())
        await other.areset()
        assert redis_client.exists("a") == 0
        await memory.aset(history(2))
        assert redis_client.llen("a") == 9
    finally:
        await aredis_client.aclose()


def test_summary_memory_rebuilds_the_same_window_from_redis(clean_redis_url: str) -> None:
    def memory() -> SummaryChatMemory:
        return SummaryChatMemory(
            llm=RecordingLLM("The user keeps asking about lookups."),
            chat_store=redis_store(clean_redis_url),
            chat_store_key="sum",
            max_tokens=350,
        )

    first = memory()
    first.put_messages(history(10))
    assert first.summary is not None
    second = memory()
    assert dumped(second.get()) == dumped(first.get())
    assert second.get()[1].content.endswith("The user keeps asking about lookups.")
    assert len(second.get_all()) == 41
