"""SummaryChatMemory: a rebuilt memory (from_dict, a restart or a second worker on the same chat
store, a chat engine's ``set(chat_history)``) resumes from the running summary already written
instead of buying every summary again; a transcript changed since is summarised anew."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    LLMMetadata,
)
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.llms import CustomLLM, MockLLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.storage.chat_store import SimpleChatStore

from llamaindex_tokenbudget import SummaryChatMemory
from llamaindex_tokenbudget.messages import to_countable_message
from tokenbudget_core.counting import resolve_counter
from tokenbudget_core.errors import InvalidInputError

MARK_KEY = "chat_history::tokenbudget-summary"


class Summariser(CustomLLM):
    """A summariser LLM that counts its calls and numbers its summaries."""

    calls: int = 0
    prompts: list[str] = []  # noqa: RUF012 - a pydantic field (copied per instance)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="gpt-4o-mini", is_chat_model=True)

    def _answer(self, messages: Any) -> ChatResponse:
        self.calls += 1
        self.prompts.append(str(messages[-1].content))
        return ChatResponse(message=ChatMessage(role="assistant", content=f"summary number {self.calls}. "))

    @llm_chat_callback()
    def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        return self._answer(messages)

    @llm_chat_callback()
    async def achat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        return self._answer(messages)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text="unused")

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        yield CompletionResponse(text="unused", delta="unused")


def turns(n: int, start: int = 0) -> list[ChatMessage]:
    return [
        ChatMessage(role="user" if i % 2 == 0 else "assistant", content=f"turn {i} " + "word " * 30)
        for i in range(start, start + n)
    ]


def held(n: int = 200, **options: Any) -> tuple[SummaryChatMemory, SimpleChatStore]:
    """A memory that was held while ``n`` messages were put (its summariser called many times)."""
    store = SimpleChatStore()
    memory = SummaryChatMemory(llm=Summariser(), chat_store=store, model="gpt-4o", max_tokens=400, **options)
    for message in turns(n):
        memory.put(message)
    assert memory.llm.calls > 20  # type: ignore[attr-defined]
    return memory, store


def contents(messages: list[ChatMessage]) -> list[tuple[str, str | None]]:
    return [(str(m.role.value), m.content) for m in messages]


def test_from_dict_resumes_the_summary_without_calling_the_summariser() -> None:
    memory, _ = held()
    data = memory.to_dict()
    assert data["summary_state"]["summary"] == memory.summary
    assert data["summary_state"]["folded"] > 0
    rebuilt = SummaryChatMemory.from_dict(data, llm=Summariser())
    assert contents(rebuilt.get()) == contents(memory.get())
    assert rebuilt.summary == memory.summary
    assert rebuilt.llm.calls == 0  # type: ignore[attr-defined]
    again = SummaryChatMemory.from_json(memory.to_json(), llm=Summariser())
    assert contents(again.get()) == contents(memory.get())
    assert again.llm.calls == 0  # type: ignore[attr-defined]


def test_a_new_memory_over_the_same_store_resumes_the_summary() -> None:
    memory, store = held()
    written = memory.summary
    restarted = SummaryChatMemory(llm=Summariser(), chat_store=store, model="gpt-4o", max_tokens=400)
    assert contents(restarted.get()) == contents(memory.get())
    assert restarted.llm.calls == 0  # type: ignore[attr-defined]
    # It goes on from there: the next fold sends the resumed summary, not the whole transcript.
    for message in turns(6, start=200):
        restarted.put(message)
    assert 1 <= restarted.llm.calls <= 3  # type: ignore[attr-defined]
    assert written is not None
    assert written in restarted.llm.prompts[0]  # type: ignore[attr-defined]
    assert "turn 3 " not in restarted.llm.prompts[0]  # type: ignore[attr-defined]


def test_set_of_the_same_history_or_an_extended_one_keeps_the_summary() -> None:
    memory, store = held()
    summariser = memory.llm
    before = summariser.calls  # type: ignore[attr-defined]
    history = [
        ChatMessage.model_validate_json(m.model_dump_json()) for m in store.get_messages("chat_history")
    ]
    memory.set(history)  # what a chat engine's chat(message, chat_history=...) does each request
    assert summariser.calls == before  # type: ignore[attr-defined]
    memory.set([*history, *turns(2, start=200)])
    assert summariser.calls - before <= 1  # type: ignore[attr-defined]
    assert len(memory.get_all()) == 202
    # A stateless server: a new memory per request over the same store, set() the history sent.
    fresh = SummaryChatMemory(llm=Summariser(), chat_store=store, model="gpt-4o", max_tokens=400)
    fresh.set(store.get_messages("chat_history"))
    assert fresh.llm.calls == 0  # type: ignore[attr-defined]
    assert fresh.summary == memory.summary


def test_a_chat_engine_passing_chat_history_each_request_buys_no_summary_again() -> None:
    memory, store = held(100)
    summariser = memory.llm
    engine = SimpleChatEngine.from_defaults(llm=MockLLM(max_tokens=8), memory=memory)
    history = list(store.get_messages("chat_history"))
    for _ in range(3):
        before = summariser.calls  # type: ignore[attr-defined]
        engine.chat("one more question " * 5, chat_history=history)
        history = list(store.get_messages("chat_history"))
        assert summariser.calls - before <= 1  # type: ignore[attr-defined]


def test_async_rebuilds_resume_too() -> None:
    memory, store = held()

    async def run() -> tuple[SummaryChatMemory, SummaryChatMemory]:
        restarted = SummaryChatMemory(llm=Summariser(), chat_store=store, model="gpt-4o", max_tokens=400)
        await restarted.aget()
        fresh = SummaryChatMemory(
            llm=Summariser(), chat_store=SimpleChatStore(), model="gpt-4o", max_tokens=400
        )
        await fresh.aset(store.get_messages("chat_history"))  # a store without the summary: few calls
        return restarted, fresh

    restarted, fresh = asyncio.run(run())
    assert restarted.llm.calls == 0  # type: ignore[attr-defined]
    assert restarted.summary == memory.summary
    assert 1 <= fresh.llm.calls <= 3  # type: ignore[attr-defined]


def test_without_a_saved_summary_a_rebuild_folds_in_a_few_calls_not_one_per_turn() -> None:
    _, store = held()
    store.delete_messages(MARK_KEY)  # a store written before the summary was saved
    rebuilt = SummaryChatMemory(llm=Summariser(), chat_store=store, model="gpt-4o", max_tokens=400)
    window = rebuilt.get()
    counter = resolve_counter("gpt-4o")
    slid = sum(int(counter.count(m.content or "")) for m in store.get_messages("chat_history"))
    assert 1 <= rebuilt.llm.calls <= math.ceil(slid / 4000) + 1  # type: ignore[attr-defined]
    assert counter.count_messages([to_countable_message(m) for m in window]) <= 400
    assert store.get_messages(MARK_KEY)  # saved again for the next rebuild


def test_a_transcript_changed_since_is_summarised_anew() -> None:
    memory, store = held()
    written = memory.summary
    same = SummaryChatMemory(llm=Summariser(), chat_store=store, model="gpt-4o", max_tokens=400)
    same.get()
    assert same.llm.calls == 0  # type: ignore[attr-defined]
    # Another worker replaced one early message: the saved summary no longer describes it.
    changed = list(store.get_messages("chat_history"))
    changed[5] = ChatMessage(role="assistant", content="something else entirely " * 5)
    store.set_messages("chat_history", changed)
    other = SummaryChatMemory(llm=Summariser(), chat_store=store, model="gpt-4o", max_tokens=400)
    other.get()
    assert other.llm.calls >= 1  # type: ignore[attr-defined]
    assert other.summary != written
    assert "something else entirely" in " ".join(other.llm.prompts)  # type: ignore[attr-defined]
    # A memory with other options (a smaller budget) does not take a summary made for another.
    small = SummaryChatMemory(llm=Summariser(), chat_store=store, model="gpt-4o", max_tokens=300)
    window = small.get()
    assert small.llm.calls >= 1  # type: ignore[attr-defined]
    counter = resolve_counter("gpt-4o")
    assert counter.count_messages([to_countable_message(m) for m in window]) <= 300


def test_reset_deletes_the_saved_summary_and_a_bad_summary_state_is_named() -> None:
    memory, store = held()
    data = memory.to_dict()
    assert store.get_messages(MARK_KEY)
    memory.reset()
    assert store.get_keys() == []
    assert memory.summary is None
    data["summary_state"] = {"summary": 3}
    with pytest.raises(InvalidInputError) as info:
        SummaryChatMemory.from_dict(data, llm=Summariser())
    assert info.value.field == "summary_state"
