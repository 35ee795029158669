"""Bad input to the LlamaIndex adapters is refused with the core's errors, naming the field.

Construction options (a handler's ledger and model, a cached LLM's model, a memory's budget)
and call arguments (messages, prompts, ``initial_token_count``) of every public entry point.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.llms import MockLLM

from llamaindex_tokenbudget import (
    CachedLLM,
    CostEventHandler,
    RoutedLLM,
    SummaryChatMemory,
    TokenBudgetChatMemory,
    to_core_request,
)
from tokenbudget_core.cache_keys import CacheScope
from tokenbudget_core.errors import InvalidInputError, InvalidMessageError, UnknownModelError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.response_cache import ExactCache

HI = ChatMessage(role="user", content="hi")


def finished(call: Callable[[], Any]) -> Any:
    """What ``call`` returns, a coroutine run to its end."""
    result = call()
    return asyncio.run(result) if asyncio.iscoroutine(result) else result


def field_of(call: Callable[[], Any]) -> str:
    """The field named by the core error ``call`` raises."""
    with pytest.raises(InvalidInputError) as info:
        finished(call)
    return info.value.field


# -- CostEventHandler ---------------------------------------------------------------------------


def test_a_cost_event_handler_with_an_unknown_model_is_refused_when_made() -> None:
    with pytest.raises(UnknownModelError):
        CostEventHandler(ledger=Ledger("memory://"), model="gpt-4o-typo")


@pytest.mark.parametrize(
    ("option", "value"), [("ledger", "not a ledger"), ("model", 123), ("feature", ""), ("user", 5)]
)
def test_cost_event_handler_options_are_named(option: str, value: Any) -> None:
    options: dict[str, Any] = {"ledger": Ledger("memory://"), option: value}
    assert field_of(lambda: CostEventHandler(**options)) == option


# -- CachedLLM ----------------------------------------------------------------------------------


def cached() -> CachedLLM:
    return CachedLLM(MockLLM(), ExactCache(), scope=CacheScope(tenant="acme"), model="gpt-4o")


def routed() -> RoutedLLM:
    return RoutedLLM(
        tiers={"small": MockLLM(), "large": MockLLM()}, models={"small": "gpt-4o-mini", "large": "gpt-4o"}
    )


BAD_MESSAGES = [(None, "messages"), ("hi", "messages"), (["hi"], "messages[0]"), ([HI, None], "messages[1]")]
BAD_PROMPTS: list[Any] = [None, 123, ["x"]]


@pytest.mark.parametrize("make", [cached, routed], ids=["CachedLLM", "RoutedLLM"])
@pytest.mark.parametrize(("messages", "field"), BAD_MESSAGES)
@pytest.mark.parametrize("method", ["chat", "achat", "stream_chat", "astream_chat"])
def test_chat_calls_name_bad_messages(make: Any, messages: Any, field: str, method: str) -> None:
    llm = make()
    with pytest.raises(InvalidMessageError) as info:
        finished(lambda: getattr(llm, method)(messages))
    assert info.value.field == field


@pytest.mark.parametrize("make", [cached, routed], ids=["CachedLLM", "RoutedLLM"])
@pytest.mark.parametrize("prompt", BAD_PROMPTS)
@pytest.mark.parametrize("method", ["complete", "acomplete", "stream_complete", "astream_complete"])
def test_completion_calls_name_a_bad_prompt(make: Any, prompt: Any, method: str) -> None:
    llm = make()
    assert field_of(lambda: getattr(llm, method)(prompt)) == "prompt"


@pytest.mark.parametrize(("messages", "field"), BAD_MESSAGES)
def test_to_core_request_needs_a_list_of_messages(messages: Any, field: str) -> None:
    with pytest.raises(InvalidMessageError) as info:
        to_core_request(messages)
    assert info.value.field == field


# -- memories -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["put_messages", "aput_messages"])
def test_putting_messages_that_are_not_a_list_is_named(method: str) -> None:
    memory = TokenBudgetChatMemory(max_tokens=200)
    assert field_of(lambda: getattr(memory, method)(None)) == "messages"
    assert memory.get_all() == []


@pytest.mark.parametrize("count", [-50, "5", True, 1.5])
def test_a_bad_initial_token_count_is_named(count: Any) -> None:
    memory = TokenBudgetChatMemory(max_tokens=200)
    memory.put(HI)
    assert field_of(lambda: memory.get(initial_token_count=count)) == "initial_token_count"
    assert field_of(lambda: memory.aget(initial_token_count=count)) == "initial_token_count"


def test_a_get_input_that_is_not_text_is_named() -> None:
    assert field_of(lambda: TokenBudgetChatMemory(max_tokens=200).get(input=123)) == "input"


@pytest.mark.parametrize("option", ["max_tokens", "reserve_output"])
@pytest.mark.parametrize("value", [True, "100", 1.5])
def test_budget_numbers_are_not_coerced(option: str, value: Any) -> None:
    assert field_of(lambda: TokenBudgetChatMemory(**{option: value})) == option


@pytest.mark.parametrize("value", [True, "100"])
def test_a_summary_cap_is_not_coerced(value: Any) -> None:
    make = lambda: SummaryChatMemory(llm=MockLLM(max_tokens=5), summary_tokens=value)  # noqa: E731
    assert field_of(make) == "summary_tokens"
