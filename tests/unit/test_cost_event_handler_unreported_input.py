"""The LlamaIndex instrumentation handler (``CostEventHandler``) records a response that reports
no input tokens with the counted input, flagged estimated, as the budget handler's settle does:
Ollama leaves ``prompt_eval_count`` out when the prompt came from its cache, and the call was
recorded as if its prompt were free (the exact output kept)."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.llms.types import ChatMessage, ChatResponse
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.llms import MockLLM
from llama_index.core.llms.callbacks import llm_chat_callback

from llamaindex_tokenbudget import CostEventHandler
from tokenbudget_core import Ledger, Usage

OLLAMA_CACHED = {  # dict(response) of ollama's chat(): prompt served whole from its KV cache
    "model": "llama3.1",
    "created_at": "2026-11-24T20:00:00Z",
    "done": True,
    "done_reason": "stop",
    "eval_count": 298,
    "eval_duration": 1012000000,
    "message": {"role": "assistant", "content": "Paris.", "tool_calls": None},
}
QUESTION = "What is the capital of France? Answer in one word, and explain nothing else at all."


def replying(raw: Any) -> MockLLM:
    """An LLM integration whose chat returns ``ChatResponse(raw=raw)``, the provider's response."""

    class Replying(MockLLM):
        @llm_chat_callback()
        def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
            return ChatResponse(message=ChatMessage(role="assistant", content="Paris."), raw=raw)

    return Replying()


def recorded(raw: Any) -> dict[str, int]:
    ledger = Ledger("memory://")
    ledger.registry.register("llama3.1", provider="ollama")
    handler = CostEventHandler(ledger=ledger, model="llama3.1", feature="chat", user="u-1")
    get_dispatcher().add_event_handler(handler)
    try:
        replying(raw).chat([ChatMessage(role="user", content=QUESTION)])
    finally:
        get_dispatcher().event_handlers.remove(handler)
    totals: dict[str, int] = {}
    for row in ledger.store.rollup([ledger.day()]):
        for key, value in row.values.items():
            totals[key] = totals.get(key, 0) + value
    return totals


def test_a_response_without_input_tokens_is_recorded_with_the_counted_input() -> None:
    cached = recorded(OLLAMA_CACHED)
    unreported = recorded(None)  # no usage at all: the handler's estimate, counted input included
    assert cached["requests"] == 1
    assert cached["output_tokens"] == 298  # Ollama's exact eval_count is kept
    assert cached["input_tokens"] == unreported["input_tokens"] > 10  # the question's tokens, not 0
    assert cached["estimated"] == 1


def test_with_counted_input_leaves_a_reported_input_alone() -> None:
    reported = Usage(input_tokens=12, output_tokens=3)
    assert reported.with_counted_input(40) is reported
    assert Usage(output_tokens=3).with_counted_input(40) == Usage(
        input_tokens=40, output_tokens=3, estimated=True
    )
    assert Usage(output_tokens=3).with_counted_input(0) == Usage(output_tokens=3)
