"""A LlamaIndex chat engine with a ``system_prompt`` and our memory sends requests within the
memory's ``max_tokens``: the memory gives the engine the ``tokenizer_fn`` it measures its prefix
messages with, so the engine passes their count as ``initial_token_count`` and ``get()``
reserves it. A memory that lists the same prompt in ``prefix_messages`` reserves it once, not
twice.

Before: the memory had no ``tokenizer_fn``, so LlamaIndex's ``SimpleChatEngine`` always passed
0 and put its system prompt on top of a full window: 436 tokens a request for
``max_tokens=400`` (with the default budget, the model's whole context window, a long chat
ends in a request the model refuses).

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

from llamaindex_tokenbudget import SummaryChatMemory, TokenBudgetChatMemory, to_core_messages
from tokenbudget_core import TokenCounter

SYSTEM = "You are the ACME support bot. Answer in the customer's language, cite the docs. " * 3
MAX_TOKENS = 400
COUNT = TokenCounter.for_model("gpt-4o-mini").count_messages


class Recording(CustomLLM):
    sent: list[list[ChatMessage]] = Field(default_factory=list)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="gpt-4o-mini", is_chat_model=True)

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kw: Any) -> ChatResponse:
        self.sent.append(list(messages))
        return ChatResponse(message=ChatMessage(role="assistant", content="answer " * 30))

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kw: Any) -> CompletionResponse:
        return CompletionResponse(text="a summary")

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kw: Any) -> Any:
        raise NotImplementedError


def request_sizes(memory: Any, how: str) -> list[int]:
    llm = Recording()
    engine = SimpleChatEngine.from_defaults(llm=llm, memory=memory, system_prompt=SYSTEM)
    for i in range(12):
        question = f"question {i}: " + "more detail " * 15
        if how == "chat":
            engine.chat(question)
        else:
            asyncio.run(engine.achat(question))
    return [int(COUNT(to_core_messages(m))) for m in llm.sent]


@pytest.mark.parametrize("how", ["chat", "achat"])
@pytest.mark.parametrize("kind", ["window", "summary"])
def test_an_engines_system_prompt_is_reserved(how: str, kind: str) -> None:
    def make(**extra: Any) -> Any:
        if kind == "window":
            return TokenBudgetChatMemory(model="gpt-4o-mini", max_tokens=MAX_TOKENS, **extra)
        return SummaryChatMemory(llm=Recording(), model="gpt-4o-mini", max_tokens=MAX_TOKENS, **extra)

    sizes = request_sizes(make(), how)
    assert max(sizes) <= MAX_TOKENS
    assert max(sizes) > MAX_TOKENS * 0.8  # the window is used, not starved
    listed = request_sizes(make(prefix_messages=[ChatMessage(role="system", content=SYSTEM)]), how)
    assert listed == sizes  # reserved once either way


def test_the_tokenizer_fn_counts_the_text_as_one_system_message() -> None:
    memory = TokenBudgetChatMemory(model="gpt-4o-mini", max_tokens=MAX_TOKENS)
    assert len(memory.tokenizer_fn("")) == 0
    assert len(memory.tokenizer_fn(SYSTEM)) == int(COUNT([{"role": "system", "content": SYSTEM}])) - int(
        COUNT([])
    )


def test_a_listed_prefix_that_differs_from_the_engines_prompt_still_leaves_room_for_it() -> None:
    """Re-review s24 F4: with any prefix_messages the engine's count was 0, so an engine prompt
    unlike them went unreserved (436 tokens sent for max_tokens=400)."""
    memory = TokenBudgetChatMemory(
        model="gpt-4o-mini",
        max_tokens=MAX_TOKENS,
        prefix_messages=[ChatMessage(role="system", content="Hi.")],
    )
    assert max(request_sizes(memory, "chat")) <= MAX_TOKENS
