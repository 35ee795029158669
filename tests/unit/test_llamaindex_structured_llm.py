"""A ``StructuredLLM`` (``llm.as_structured_llm(Model)``) around an LLM is one provider call.

Its events and its inner LLM's may reach two budget handlers of one ledger (the one in
``Settings``, which the ``StructuredLLM``'s own callback manager takes, and one on the inner LLM
for a feature): the call is still charged once, to the inner call's payer, with the provider's
usage, and nothing is left held. Real LlamaIndex wrappers and ``StructuredLLM``; the model is a
small ``CustomLLM`` answering JSON with OpenAI-shaped usage.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from llama_index.core import Settings
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, CompletionResponse, LLMMetadata
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from pydantic import BaseModel

from llamaindex_tokenbudget import BudgetCallbackHandler
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.ledger import Ledger

MODEL = "gpt-4o-mini"
PIECES = ['{"name": ', '"Ann", ', '"age": 3}']
USAGE = {"prompt_tokens": 111, "completion_tokens": 7}


class Person(BaseModel):
    name: str
    age: int


def raw(usage: bool = True) -> dict[str, Any]:
    return {"object": "chat.completion", "model": MODEL, **({"usage": USAGE} if usage else {})}


class JsonChat(CustomLLM):
    """A chat model answering a person as JSON (the last stream chunk carries the usage)."""

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=MODEL, is_chat_model=True)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text="".join(PIECES), raw=raw())

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> Iterator[CompletionResponse]:
        raise NotImplementedError

    @llm_chat_callback()
    def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        return ChatResponse(message=ChatMessage(role="assistant", content="".join(PIECES)), raw=raw())

    @llm_chat_callback()
    def stream_chat(self, messages: Any, **kwargs: Any) -> Iterator[ChatResponse]:
        def gen() -> Iterator[ChatResponse]:
            text = ""
            for i, piece in enumerate(PIECES):
                text += piece
                last = i == len(PIECES) - 1
                yield ChatResponse(
                    message=ChatMessage(role="assistant", content=text), delta=piece, raw=raw(usage=last)
                )

        return gen()


@pytest.mark.filterwarnings("ignore:The `json` method is deprecated")  # StructuredLLM.stream_chat's own
@pytest.mark.parametrize("how", ["chat", "stream_chat"])
def test_a_structured_llm_seen_by_two_handlers_of_one_ledger_is_charged_once(how: str) -> None:
    ledger = Ledger("memory://", policy=BudgetPolicy(daily_usd=Decimal("1")))
    in_settings = BudgetCallbackHandler(ledger)
    for_feature = BudgetCallbackHandler(ledger, feature="extract")
    before = Settings._callback_manager
    Settings.callback_manager = CallbackManager([in_settings])
    try:
        structured = JsonChat(callback_manager=CallbackManager([for_feature])).as_structured_llm(Person)
        messages = [ChatMessage(role="user", content="Give me a person")]
        if how == "chat":
            reply = structured.chat(messages)
        else:
            *_, reply = structured.stream_chat(messages)
    finally:
        Settings._callback_manager = before
    assert json.loads(reply.message.content or "") == {"name": "Ann", "age": 3}
    rows = ledger.store.rollup([ledger.day()])
    assert [(r.rollup_key, r.values["requests"], r.values["input_tokens"]) for r in rows] == [
        ("extract//gpt-4o-mini", 1, 111)  # once, to the inner call's payer, the provider's usage
    ]
    assert ledger.state().used["daily_usd"] == rows[0].values["cost_nanos"] / Decimal(10**9)  # nothing held
