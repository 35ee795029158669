"""Our LlamaIndex memories and what a host sends beside them (review s30 llamaindex, findings 2
and 3).

- A ``SimpleChatEngine`` with several ``prefix_messages`` measures their text, joined by spaces,
  with the memory's ``tokenizer_fn``: the memory counts the engine's messages themselves (each
  one's framing), so the request stays within ``max_tokens`` (before: one framing reserved for
  five messages, 304 tokens sent for ``max_tokens=300``).
- ``tools=`` takes a valid LlamaIndex tool whose description is over OpenAI's 1,024 characters
  (counted as sent, as ``RoutedLLM`` counts it), instead of refusing it.

Real ``SimpleChatEngine``; the model is a ``CustomLLM`` recording what it is sent."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from llama_index.core.bridge.pydantic import Field
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.llms import ChatMessage, ChatResponse, CompletionResponse, CustomLLM, LLMMetadata
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.tools import FunctionTool

from llamaindex_tokenbudget import SummaryChatMemory, TokenBudgetChatMemory, to_core_messages
from tokenbudget_core import TokenCounter

MAX_TOKENS = 300
COUNTER = TokenCounter.for_model("gpt-4o")
PREFIX = [
    ChatMessage(role="system", content="You are terse."),
    ChatMessage(role="user", content="Example: hi"),
    ChatMessage(role="assistant", content="hi"),
    ChatMessage(role="user", content="Example: bye"),
    ChatMessage(role="assistant", content="bye"),
]


class Recording(CustomLLM):
    sent: list[list[ChatMessage]] = Field(default_factory=list)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="gpt-4o", is_chat_model=True)

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kw: Any) -> ChatResponse:
        self.sent.append(list(messages))
        return ChatResponse(message=ChatMessage(role="assistant", content="word " * 20))

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kw: Any) -> CompletionResponse:
        return CompletionResponse(text="a summary")

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kw: Any) -> Any:
        raise NotImplementedError


def _memory(kind: str) -> Any:
    if kind == "window":
        return TokenBudgetChatMemory(model="gpt-4o", max_tokens=MAX_TOKENS)
    return SummaryChatMemory(llm=Recording(), model="gpt-4o", max_tokens=MAX_TOKENS)


def _sizes(memory: Any, how: str) -> list[int]:
    llm = Recording()
    engine = SimpleChatEngine.from_defaults(llm=llm, memory=memory, prefix_messages=PREFIX)
    for i in range(30):
        question = f"q{i} " + "more " * (i % 7 * 3)
        if how == "chat":
            engine.chat(question)
        else:
            asyncio.run(engine.achat(question))
    return [int(COUNTER.count_messages(to_core_messages(m))) for m in llm.sent]


@pytest.mark.parametrize("how", ["chat", "achat"])
@pytest.mark.parametrize("kind", ["window", "summary"])
def test_several_engine_prefix_messages_stay_within_max_tokens(kind: str, how: str) -> None:
    sizes = _sizes(_memory(kind), how)
    assert max(sizes) <= MAX_TOKENS  # counted with the memory's own counter
    assert max(sizes) > MAX_TOKENS * 0.8  # the window is used, not starved


def test_text_from_another_caller_is_still_one_system_message() -> None:
    memory = TokenBudgetChatMemory(model="gpt-4o", max_tokens=MAX_TOKENS)
    text = " ".join(m.content or "" for m in PREFIX)
    one = int(COUNTER.count_messages([{"role": "system", "content": text}])) - int(COUNTER.count_messages([]))
    assert len(memory.tokenizer_fn(text)) == one
    assert len(memory.tokenizer_fn("")) == 0


def _lookup(order_id: str) -> str:
    return "shipped"


LONG = FunctionTool.from_defaults(
    _lookup, description="Look an order up. " + "Field notes and examples. " * 45
)


@pytest.mark.parametrize("kind", ["window", "summary"])
def test_a_tool_with_a_long_description_is_taken_and_counted(kind: str) -> None:
    assert len(LONG.metadata.description) > 1024  # over OpenAI's length check
    extra: dict[str, Any] = {} if kind == "window" else {"llm": Recording()}
    cls = TokenBudgetChatMemory if kind == "window" else SummaryChatMemory
    memory = cls(model="gpt-4o", max_tokens=4000, tools=[LONG], **extra)  # type: ignore[list-item]
    [definition] = memory.tools
    assert definition["function"]["name"] == "_lookup"
    assert definition["function"]["description"] == LONG.metadata.description  # counted as sent
    plain = cls(model="gpt-4o", max_tokens=4000, **extra)
    memory.put(ChatMessage(role="user", content="where is my order?"))
    plain.put(ChatMessage(role="user", content="where is my order?"))
    assert memory.get() == plain.get()  # the conversation still fits; the tool is reserved
