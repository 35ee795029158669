"""A memory call cancelled part-way (``asyncio.wait_for`` timing out while the summariser runs,
or while another worker's messages are taken in) leaves the memory to reload from the chat
store: its window never shows a message the store does not hold, nor one twice. It used to keep
the half-done state (``except Exception`` does not see ``CancelledError``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.llms import ChatMessage, ChatResponse, MockLLM

from llamaindex_tokenbudget.memory import SummaryChatMemory


class SlowSummariser(MockLLM):
    """A summariser whose async call takes a while (a real provider call)."""

    async def achat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        await asyncio.sleep(1)
        return ChatResponse(message=ChatMessage(role="assistant", content="summary"))

    def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        return ChatResponse(message=ChatMessage(role="assistant", content="summary"))


def _memory(**kwargs: Any) -> SummaryChatMemory:
    return SummaryChatMemory(llm=SlowSummariser(), model="gpt-4o", max_tokens=300, reserve_output=0, **kwargs)


def _texts(messages: list[ChatMessage]) -> list[str]:
    return [str(m.content) for m in messages]


def test_an_aput_cancelled_in_the_summariser_leaves_nothing_the_store_lacks() -> None:
    async def scenario() -> tuple[list[str], list[str], list[str]]:
        memory = _memory()
        for i in range(8):
            role = "user" if i % 2 == 0 else "assistant"
            await memory.aput(ChatMessage(role=role, content=f"m{i} " + "word " * 20))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(
                memory.aput(ChatMessage(role="user", content="lost " + "word " * 100)), 0.3
            )
        await memory.aput(ChatMessage(role="assistant", content="ok"))
        fresh = _memory(chat_store=memory.chat_store)
        return _texts(memory.get()), _texts(fresh.get()), _texts(memory.get_all())

    window, fresh_window, stored = asyncio.run(scenario())
    assert not any(text.startswith("lost") for text in stored)  # the cancelled put never reached the store
    assert not any(text.startswith("lost") for text in window)
    assert window == fresh_window  # in step with the store, as a memory built from it
    assert window[-1] == "ok"


def test_an_aget_cancelled_while_taking_in_new_messages_shows_none_twice() -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        a = _memory()
        b = _memory(chat_store=a.chat_store)
        for i in range(4):
            await a.aput(ChatMessage(role="user" if i % 2 == 0 else "assistant", content=f"m{i}"))
        for i in range(4, 12):  # another worker adds past a's budget: a's next read summarises
            await b.aput(
                ChatMessage(role="user" if i % 2 == 0 else "assistant", content=f"m{i} " + "word " * 20)
            )
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(a.aget(), 0.3)
        return _texts(await asyncio.wait_for(a.aget(), 30)), _texts(a.get_all())

    window, stored = asyncio.run(scenario())
    kept = [text for text in window if text in stored]  # the window's messages (not its summary)
    assert kept
    assert len(kept) == len(set(kept)), window
