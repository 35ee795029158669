"""LlamaIndex memories sharing a chat-store key: a transcript replaced by another worker.

A memory whose transcript was replaced by another worker (``reset()``, then a new
conversation) rebuilds from the store even when the new transcript begins and ends with the
same messages as the old one (a system prompt, a short "Done."): it never returns, or keeps
summarised, a message of the deleted conversation.

(The JSON round trip of a Redis chat store is tested in
``tests/integration/test_s22_llamaindex_memory_redis.py``.)
"""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatResponse
from llama_index.core.llms import ChatMessage, MockLLM
from llama_index.core.llms.callbacks import llm_chat_callback
from llama_index.core.storage.chat_store import SimpleChatStore

from llamaindex_tokenbudget import SummaryChatMemory, TokenBudgetChatMemory
from llamaindex_tokenbudget._memory_base import BudgetMemory

CARD = "My card number is 4111 1111 1111 1111, block it"


def system(text: str) -> ChatMessage:
    return ChatMessage(role="system", content=text)


def user(text: str) -> ChatMessage:
    return ChatMessage(role="user", content=text)


def assistant(text: str) -> ChatMessage:
    return ChatMessage(role="assistant", content=text)


class CardSummariser(MockLLM):
    """Writes a summary that keeps the card number while the conversation (or the previous
    summary) it was given holds it: a stale summary shows."""

    def __init__(self) -> None:
        super().__init__()

    @llm_chat_callback()
    def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        told = " ".join(str(m.content) for m in messages)
        return ChatResponse(
            message=assistant("The card 4111 was blocked." if "4111" in told else "Small talk.")
        )

    @llm_chat_callback()
    async def achat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        return self.chat(messages)


async def put(memory: BudgetMemory, message: ChatMessage, kind: str) -> None:
    await memory.aput(message) if kind == "async" else memory.put(message)


async def window(memory: BudgetMemory, kind: str) -> list[str]:
    got = await memory.aget() if kind == "async" else memory.get()
    return [str(m.content) for m in got]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_replaced_transcript_with_the_same_first_and_last_message_is_rebuilt(kind: str) -> None:
    store = SimpleChatStore()
    a, b = (
        TokenBudgetChatMemory(model="gpt-4o", max_tokens=2000, chat_store=store, chat_store_key="conv")
        for _ in "ab"
    )
    for m in (system("You are a bank assistant."), user(CARD), assistant("Done.")):
        await put(a, m, kind)
    assert await window(a, kind) == ["You are a bank assistant.", CARD, "Done."]
    b.reset()  # the user asked to forget everything; a new conversation starts on another worker
    new = ["You are a bank assistant.", "What are your opening hours?", "Done.", "thanks"]
    await put(b, system(new[0]), kind)
    await put(b, user(new[1]), kind)
    await put(b, assistant(new[2]), kind)  # message 2 equals the old last one
    await put(b, user(new[3]), kind)
    assert [m.content for m in store.get_messages("conv")] == new
    assert await window(a, kind) == new  # nothing of the deleted conversation
    await put(a, assistant("You're welcome."), kind)  # and A keeps writing the new conversation
    assert await window(b, kind) == await window(a, kind) == [*new, "You're welcome."]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_message_changed_in_the_middle_of_the_transcript_is_seen(kind: str) -> None:
    store = SimpleChatStore()
    a = TokenBudgetChatMemory(model="gpt-4o", max_tokens=2000, chat_store=store, chat_store_key="conv")
    texts = ["Be brief.", "hi", "Done.", "thanks", "Done."]
    for i, text in enumerate(texts):
        await put(a, system(text) if i == 0 else user(text) if i % 2 else assistant(text), kind)
    assert await window(a, kind) == texts
    # another worker rewrites the transcript: same length, same first and last message
    rewritten = [system("Be brief."), user("hello"), assistant("Done."), user("bye"), assistant("Done.")]
    store.set_messages("conv", rewritten)
    assert await window(a, kind) == ["Be brief.", "hello", "Done.", "bye", "Done."]


def test_a_summary_of_a_deleted_conversation_is_not_kept() -> None:
    store = SimpleChatStore()

    def memory() -> SummaryChatMemory:
        return SummaryChatMemory(
            llm=CardSummariser(),
            model="gpt-4o",
            max_tokens=400,
            first_user="summarise",
            chat_store=store,
            chat_store_key="conv",
        )

    a, b = memory(), memory()
    old = [system("You are a bank assistant."), user(CARD), assistant("Done.")]
    old += [user(f"question {i} " + "word " * 30) if i % 2 == 0 else assistant("Done.") for i in range(24)]
    a.put_messages(old)
    assert a.summary is not None
    assert "4111" in a.summary  # the card number was folded
    b.reset()
    new = [system("You are a bank assistant."), user("What are your opening hours?"), assistant("Done.")]
    new += [user(f"other {i} " + "text " * 30) if i % 2 == 0 else assistant("Done.") for i in range(25)]
    b.put_messages(new)  # message len(old) - 1 is a "Done." too
    assert str(new[len(old) - 1].content) == str(old[-1].content) == "Done."
    shown = " ".join(str(m.content) for m in a.get())
    assert "4111" not in shown
    assert "4111" not in str(a.summary)
    assert " ".join(str(m.content) for m in b.get()) == shown
