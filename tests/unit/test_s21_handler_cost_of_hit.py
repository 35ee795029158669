"""A reply served from a response cache made no model call: ``cost_of_message`` (LangChain) and
``cost_of_response`` (LlamaIndex) price it $0, as the ledger charges it (review s21, saving
finding 5). One rule in the core (``served_hit``), the adapters only find the marks."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from langchain_core.caches import InMemoryCache
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from llama_index.core.base.llms.types import (
    ChatMessage,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from pydantic import PrivateAttr

from langchain_tokenbudget import TokenBudgetLLMCache, cost_of_message, usage_of
from llamaindex_tokenbudget import CachedLLM, cost_of_response
from tokenbudget_core import Usage, attribute, cost_of
from tokenbudget_core.cache_keys import CacheScope
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report
from tokenbudget_core.response_cache import ExactCache, ServedHit, served_hit
from tokenbudget_core.semantic_cache import SemanticCache

ONE_CALL = cost_of(Usage(input_tokens=100, output_tokens=10), "gpt-4o-mini")


class Echo(BaseChatModel):
    """Answers 'echo: <text>' with 100 input / 10 output tokens on gpt-4o-mini; counts calls."""

    model_name: str = "gpt-4o-mini"
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "echo"

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        self.calls += 1
        reply = AIMessage(
            f"echo: {messages[-1].content}",
            usage_metadata={"input_tokens": 100, "output_tokens": 10, "total_tokens": 110},
            response_metadata={"model_name": self.model_name, "finish_reason": "stop"},
        )
        return ChatResult(generations=[ChatGeneration(message=reply)])


@pytest.mark.parametrize("cache", [ExactCache, SemanticCache])
@pytest.mark.parametrize("is_async", [False, True])
def test_cost_of_message_of_a_tokenbudget_cache_hit_is_zero(cache: type[Any], is_async: bool) -> None:
    ledger = Ledger("memory://")
    model = Echo(cache=TokenBudgetLLMCache(cache(ledger=ledger), scope=CacheScope(tenant="t")))
    ask = (lambda: asyncio.run(model.ainvoke("hello"))) if is_async else (lambda: model.invoke("hello"))
    first, hit = ask(), ask()
    assert model.calls == 1
    assert cost_of_message(first) == ONE_CALL
    assert cost_of_message(hit) == Decimal(0)
    assert usage_of(hit).input_tokens == 100  # the cached call's usage, as documented
    totals = build_report(ledger).totals
    assert (totals.cache_hits, totals.cost_usd) == (1, Decimal(0))  # the ledger agrees: $0


def test_cost_of_message_of_a_langchain_cache_hit_is_zero() -> None:
    model = Echo(cache=InMemoryCache())
    first, hit = model.invoke("hello"), model.invoke("hello")
    assert model.calls == 1
    assert cost_of_message(first) == ONE_CALL
    assert cost_of_message(hit) == Decimal(0)


def test_cost_of_message_still_validates_a_reply_of_a_model_call() -> None:
    with pytest.raises(InvalidInputError):
        cost_of_message("not a message")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError) as raised:
        cost_of_message(AIMessage("hi"))
    assert raised.value.field == "message.usage_metadata"


class Counting(CustomLLM):
    """A completion LLM on gpt-4o-mini reporting 100 / 10 tokens in ``raw``; counts its calls."""

    _calls: int = PrivateAttr(default=0)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="gpt-4o-mini", is_chat_model=False)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self._calls += 1
        raw = {"model": "gpt-4o-mini", "choices": [{"finish_reason": "stop"}],
               "usage": {"prompt_tokens": 100, "completion_tokens": 10}}  # fmt: skip
        return CompletionResponse(text="ok", raw=raw)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        raise NotImplementedError


def test_cost_of_response_of_a_cached_llm_hit_is_zero() -> None:
    ledger = Ledger("memory://")
    inner = Counting()
    llm = CachedLLM(inner, ExactCache(ledger=ledger), scope=CacheScope(tenant="t"), model="gpt-4o-mini")
    with attribute(user="u"):
        first, hit = llm.complete("hello"), llm.complete("hello")
        chat_first = llm.chat([ChatMessage(role="user", content="hi there")])
        chat_hit = llm.chat([ChatMessage(role="user", content="hi there")])
    assert inner._calls == 2
    assert cost_of_response(first) == ONE_CALL
    assert cost_of_response(hit) == Decimal(0)
    assert cost_of_response(chat_first) == ONE_CALL
    assert cost_of_response(chat_hit) == Decimal(0)


def test_served_hit_is_the_one_rule() -> None:
    assert served_hit({"saved_usd": "0.5", "recorded": True}) == ServedHit(Decimal("0.5"), True)
    assert served_hit({}) == ServedHit(None, False)
    assert served_hit(usage={"input_tokens": 3, "total_cost": 0}) == ServedHit(None, False)
    assert served_hit(None, {"input_tokens": 3}) is None
    assert served_hit("tokenbudget_cache") is None
    assert served_hit() is None


def test_usage_of_a_cached_llm_hit_names_the_hit_and_the_right_fix() -> None:
    from llamaindex_tokenbudget import usage_of as li_usage_of

    inner = Counting()
    llm = CachedLLM(inner, ExactCache(), scope=CacheScope(tenant="t"), model="gpt-4o-mini")
    llm.complete("hello")
    hit = llm.complete("hello")
    with pytest.raises(InvalidInputError) as raised:
        li_usage_of(hit)
    assert "response cache" in str(raised.value)
    assert "cost_of_response" in str(raised.value)
