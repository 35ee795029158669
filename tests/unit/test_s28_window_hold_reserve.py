"""A window that holds what it cannot send (``hold_overflow``) and keeps room for the rest of a
request (``reserve``), and the LlamaIndex memories built on them (review s28): a paid reply too
big for the window still reaches the chat store, a memory whose store holds one is usable again
after the next message, and a summary memory never drops a turn its summary does not hold."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, ChatResponse
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.llms import MockLLM
from llama_index.core.storage.chat_store import SimpleChatStore

from llamaindex_tokenbudget import SummaryChatMemory, TokenBudgetChatMemory
from tokenbudget_core.errors import ContextOverflowError, InvalidInputError
from tokenbudget_core.summary import SummaryBuffer
from tokenbudget_core.window import ConversationWindow


def turn(i: int, words: int = 30) -> dict[str, str]:
    return {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "w " * words}


# -- the core window ------------------------------------------------------------------------------


def test_a_held_message_is_kept_and_pushed_out_by_the_next_turn() -> None:
    window: ConversationWindow[Any] = ConversationWindow("gpt-4o", max_tokens=300, hold_overflow=True)
    window.append(turn(0, 20))
    window.append({"role": "assistant", "content": "word " * 400})  # cannot fit: held
    assert len(window) == 2
    assert window.overflowing
    with pytest.raises(ContextOverflowError):
        window.messages()
    window.append(turn(2, 20))
    assert not window.overflowing
    assert [m["content"] for m in window.messages()][-1].startswith("turn 2")
    assert len(window.transcript()) == 3


def test_without_hold_an_append_that_cannot_fit_is_still_refused() -> None:
    window: ConversationWindow[Any] = ConversationWindow("gpt-4o", max_tokens=300)
    window.append(turn(0, 20))
    with pytest.raises(ContextOverflowError):
        window.append({"role": "assistant", "content": "word " * 400})
    assert len(window) == 1
    assert not window.overflowing


def test_a_reservation_slides_turns_out_and_can_be_given_back() -> None:
    window: ConversationWindow[Any] = ConversationWindow("gpt-4o", max_tokens=1_000)
    for i in range(20):
        window.append(turn(i))
    before = len(window.messages())
    window.reserve(400)
    assert window.reserved == 400
    assert window.tokens <= 1_000 - 400
    assert len(window.messages()) < before
    window.reserve(0)
    assert window.budget == 1_000
    for i in range(20, 40):
        window.append(turn(i))
    assert window.tokens > 1_000 - 400  # the room is the turns' again


def test_a_reservation_that_leaves_no_room_is_refused_and_undone() -> None:
    window: ConversationWindow[Any] = ConversationWindow("gpt-4o", max_tokens=500)
    window.append({"role": "system", "content": "rules " * 200})
    window.append(turn(0))
    with pytest.raises(ContextOverflowError):
        window.reserve(400)
    assert window.reserved == 0
    assert window.messages()
    for bad in (-1, True, 1.5, "10"):
        with pytest.raises(InvalidInputError) as refused:
            window.reserve(bad)  # type: ignore[arg-type]
        assert refused.value.field == "tokens"
    with pytest.raises(InvalidInputError) as refused:
        ConversationWindow("gpt-4o", max_tokens=500, hold_overflow="yes")  # type: ignore[arg-type]
    assert refused.value.field == "hold_overflow"


def _covering(previous: str | None, messages: list[Any]) -> str:
    """A summariser whose summary lists every turn it was given, and those its previous one listed."""
    turns = {int(n) for m in messages for n in re.findall(r"turn (\d+)", str(m.text))}
    turns |= {int(n) for n in re.findall(r"\d+", previous or "")}
    return "covers " + ",".join(map(str, sorted(turns)))


def _seen(summary: str | None, window: list[Any], text: Any) -> set[int]:
    shown = {int(n) for m in window for n in re.findall(r"turn (\d+)", str(text(m)))}
    return shown | {int(n) for n in re.findall(r"\d+", summary or "")}


def test_a_summary_buffer_folds_what_a_reservation_pushes_out() -> None:
    buffer: SummaryBuffer[Any] = SummaryBuffer(_covering, "gpt-4o", max_tokens=1_000, low_water=None)
    for i in range(40):
        buffer.append(turn(i))
    buffer.reserve(450)
    window = buffer.messages()
    assert buffer.tokens <= 1_000 - 450
    assert _seen(buffer.summary, window, lambda m: m["content"]) == set(range(40))


def test_areserve_awaits_an_async_summariser() -> None:
    async def summarise(previous: str | None, messages: list[Any]) -> str:
        return _covering(previous, messages)

    async def run() -> set[int]:
        buffer: SummaryBuffer[Any] = SummaryBuffer(summarise, "gpt-4o", max_tokens=1_000, low_water=None)
        for i in range(40):
            await buffer.aappend(turn(i))
        await buffer.areserve(450)
        return _seen(buffer.summary, buffer.messages(), lambda m: m["content"])

    assert asyncio.run(run()) == set(range(40))


# -- the LlamaIndex memories ------------------------------------------------------------------------


class CoveringLLM(MockLLM):
    """Writes summaries that list the turns they cover (see :func:`_covering`)."""

    def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        body = str(messages[-1].content)
        turns = sorted({int(n) for n in re.findall(r"turn (\d+)", body)} | _listed(body))
        return ChatResponse(
            message=ChatMessage(role="assistant", content="covers " + ",".join(map(str, turns)))
        )

    async def achat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        return self.chat(messages, **kwargs)


def _listed(body: str) -> set[int]:
    return {int(n) for listed in re.findall(r"covers ([\d,]+)", body) for n in listed.split(",") if n}


def _li_turn(i: int) -> ChatMessage:
    return ChatMessage(**turn(i))


PREFIX = [ChatMessage(role="system", content="You are a helpful agent. " + "policy " * 450)]


@pytest.mark.parametrize("how", ["prefix_messages", "initial_token_count", "input", "aget"])
def test_a_summary_memory_never_drops_a_turn_its_summary_lacks(how: str) -> None:
    """With a system prompt beside the memory (its ``prefix_messages``, a chat engine's
    ``initial_token_count``, the question to come), every turn is in the summary or the window."""
    options: dict[str, Any] = {"prefix_messages": PREFIX} if how == "prefix_messages" else {}
    memory = SummaryChatMemory(
        llm=CoveringLLM(), model="gpt-4o", max_tokens=1_000, reserve_output=0, low_water=None, **options
    )
    for i in range(40):
        memory.put(_li_turn(i))
    if how == "initial_token_count":
        window = memory.get(initial_token_count=len(memory.tokenizer_fn(str(PREFIX[0].content))))
    elif how == "input":
        window = memory.get(input="policy " * 450)
    elif how == "aget":
        window = asyncio.run(memory.aget(initial_token_count=470))
    else:
        window = memory.get()
    assert _seen(memory.summary, window, lambda m: m.content) == set(range(40))


def test_a_reply_too_big_for_the_window_still_reaches_the_store() -> None:
    memory = TokenBudgetChatMemory(model="gpt-4o", max_tokens=300, reserve_output=0)
    memory.put(ChatMessage(role="user", content="word " * 150))  # pinned: the first user message
    memory.put(ChatMessage(role="assistant", content="word " * 200))  # paid for: never lost
    assert [m.role for m in memory.get_all()] == ["user", "assistant"]
    with pytest.raises(ContextOverflowError):
        memory.get()


def test_a_chat_engine_reply_too_big_is_kept_and_the_chat_goes_on() -> None:
    """The engine's LLM answers 350 tokens into a 300-token memory: each paid reply is kept, and
    the next turn pushes it out of the window."""
    memory = TokenBudgetChatMemory(model="gpt-4o", max_tokens=300, reserve_output=0)
    engine = SimpleChatEngine.from_defaults(llm=MockLLM(max_tokens=350), memory=memory)
    engine.chat("hello")
    engine.chat("next question")
    assert [m.role for m in memory.get_all()] == ["user", "assistant"] * 2
    memory.put(ChatMessage(role="user", content="third"))
    assert [m.content for m in memory.get()] == ["hello", "third"]


def test_a_store_holding_a_message_too_big_for_this_memory_is_usable_again() -> None:
    """Another worker with a larger budget wrote a long reply: this memory is not stuck on it."""
    store = SimpleChatStore()
    big = TokenBudgetChatMemory(model="gpt-4o", max_tokens=5_000, chat_store=store)
    big.put(ChatMessage(role="user", content="hello"))
    big.put(ChatMessage(role="assistant", content="word " * 1_000))
    small = TokenBudgetChatMemory(model="gpt-4o", max_tokens=300, chat_store=store)
    with pytest.raises(ContextOverflowError):
        small.get()
    small.put(ChatMessage(role="user", content="next"))
    assert [m.content for m in small.get()] == ["hello", "next"]
