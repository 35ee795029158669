"""``memory_cls=SummaryChatMemory`` in a chat engine: LlamaIndex builds the memory with no LLM,
so the running summary is written by ``Settings.llm`` when one was set. Before, it failed with
an error naming ``llm`` even then (the model was already taken from ``Settings.llm``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, CompletionResponse, LLMMetadata
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.settings import Settings

from llamaindex_tokenbudget import SummaryChatMemory
from tokenbudget_core.errors import InvalidInputError


class CountingLLM(CustomLLM):
    """A chat model that names itself, answers a fixed text and counts its calls."""

    calls: int = 0

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="gpt-4o", context_window=128_000, is_chat_model=True)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text="ok")

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        yield CompletionResponse(text="ok", delta="ok")

    @llm_chat_callback()
    def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        self.calls += 1
        return ChatResponse(message=ChatMessage(role="assistant", content="a summary of the talk so far"))


@pytest.fixture
def settings_llm() -> Iterator[CountingLLM]:
    saved = Settings._llm
    llm = CountingLLM()
    Settings.llm = llm
    try:
        yield llm
    finally:
        Settings._llm = saved


def test_memory_cls_summary_memory_summarises_with_the_settings_llm(settings_llm: CountingLLM) -> None:
    engine = SimpleChatEngine.from_defaults(llm=CountingLLM(), memory_cls=SummaryChatMemory)
    memory = engine._memory
    assert isinstance(memory, SummaryChatMemory)
    assert memory.llm is settings_llm
    small = SummaryChatMemory.from_defaults(max_tokens=120)
    for i in range(12):
        small.put(ChatMessage(role="user", content=f"question {i} about the weather in city {i} today"))
        small.put(ChatMessage(role="assistant", content=f"answer {i}: sunny and warm in city {i}"))
    small.get()
    assert settings_llm.calls > 0  # the summary was written by Settings.llm
    assert small.summary == "a summary of the talk so far"


def test_without_settings_llm_the_error_still_names_what_to_pass() -> None:
    saved = Settings._llm
    Settings._llm = None
    try:
        with pytest.raises(InvalidInputError) as e:
            SummaryChatMemory.from_defaults(model="gpt-4o", max_tokens=1_000)
        assert e.value.field == "llm"
    finally:
        Settings._llm = saved
