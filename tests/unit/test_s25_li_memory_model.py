"""A host that builds the memory itself (``memory_cls=``) does not name its LLM: the memory
must count with the engine's model (``Settings.llm``) or refuse, never silently with gpt-4o."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    LLMMetadata,
)
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.settings import Settings

from llamaindex_tokenbudget import SummaryChatMemory, TokenBudgetChatMemory
from tokenbudget_core.errors import InvalidInputError


class NamedLLM(CustomLLM):
    """A chat model that names itself and answers a fixed text."""

    name: str = "claude-sonnet-4-5"
    window: int = 200_000

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.name, context_window=self.window, is_chat_model=True)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text="ok")

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        yield CompletionResponse(text="ok", delta="ok")

    @llm_chat_callback()
    def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        return ChatResponse(message=ChatMessage(role="assistant", content="ok"))


@pytest.fixture
def no_settings_llm() -> Iterator[None]:
    saved = Settings._llm
    Settings._llm = None
    try:
        yield
    finally:
        Settings._llm = saved


@pytest.fixture
def settings_llm() -> Iterator[NamedLLM]:
    saved = Settings._llm
    llm = NamedLLM()
    Settings.llm = llm
    try:
        yield llm
    finally:
        Settings._llm = saved


@pytest.mark.usefixtures("no_settings_llm")
@pytest.mark.parametrize("memory_cls", [TokenBudgetChatMemory, SummaryChatMemory])
def test_memory_cls_without_a_model_is_refused_naming_model(memory_cls: type[Any]) -> None:
    with pytest.raises(InvalidInputError) as info:
        SimpleChatEngine.from_defaults(llm=NamedLLM(), memory_cls=memory_cls)
    assert info.value.field == "model"
    assert "memory=" in str(info.value)
    assert "Settings.llm" in str(info.value)
    assert Settings._llm is None  # Settings.llm's lazy default (OpenAI) was not resolved


def test_memory_cls_counts_with_the_settings_llm(settings_llm: NamedLLM) -> None:
    engine = SimpleChatEngine.from_defaults(llm=settings_llm, memory_cls=TokenBudgetChatMemory)
    memory = engine._memory
    assert isinstance(memory, TokenBudgetChatMemory)
    assert memory.model == "claude-sonnet-4-5"
    assert memory.max_tokens == 200_000 - 256
    assert engine.chat("hello").response == "ok"
    assert [m.content for m in memory.get_all()] == ["hello", "ok"]


def test_settings_llm_of_an_unknown_model_is_refused(settings_llm: NamedLLM) -> None:
    Settings.llm = NamedLLM(name="my-private-model")
    with pytest.raises(InvalidInputError, match="my-private-model") as info:
        TokenBudgetChatMemory.from_defaults(chat_history=[], token_limit=20_000)
    assert info.value.field == "model"


@pytest.mark.usefixtures("no_settings_llm")
def test_a_token_limit_above_the_models_window_is_refused() -> None:
    # The limit of a 200k-window LLM given to a memory counting with gpt-4o (128k).
    with pytest.raises(InvalidInputError) as info:
        TokenBudgetChatMemory.from_defaults(model="gpt-4o", token_limit=200_000 - 256)
    assert info.value.field == "token_limit"
    with pytest.raises(InvalidInputError) as info:
        TokenBudgetChatMemory.from_defaults(model="gpt-4o", max_tokens=500_000)
    assert info.value.field == "max_tokens"


@pytest.mark.usefixtures("no_settings_llm")
def test_direct_calls_keep_the_constructors_default() -> None:
    assert TokenBudgetChatMemory.from_defaults(max_tokens=300).model == TokenBudgetChatMemory().model
    assert TokenBudgetChatMemory.from_defaults(llm=NamedLLM(), token_limit=1000).model == "claude-sonnet-4-5"
    memory = TokenBudgetChatMemory.from_defaults(model="gpt-4o-mini", token_limit=1000)
    assert (memory.model, memory.max_tokens) == ("gpt-4o-mini", 1000)
