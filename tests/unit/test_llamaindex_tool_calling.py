"""RoutedLLM and CachedLLM as function-calling LLMs: agents run on them, cached tool calls survive.

``FunctionAgent`` (LlamaIndex's own agent workflow) drives ``MockFunctionCallingLLM`` tiers and
wrapped LLMs through ``astream_chat_with_tools`` / ``get_tool_calls_from_response``.
"""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage, TextBlock, ToolCallBlock
from llama_index.core.llms import MockLLM
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.tools import FunctionTool

from llamaindex_tokenbudget import CachedLLM, RoutedLLM
from tokenbudget_core.cache_keys import CacheScope
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.response_cache import ExactCache

SCOPE = CacheScope(tenant="acme")
MODELS = {"small": "gpt-4o-mini", "large": "gpt-4o"}


def adder(calls: list[tuple[int, int]]) -> FunctionTool:
    def add(a: int = 1, b: int = 2) -> int:
        """Add two numbers."""
        calls.append((a, b))
        return a + b

    return FunctionTool.from_defaults(add)


def routed() -> RoutedLLM:
    return RoutedLLM(
        tiers={"small": MockFunctionCallingLLM(), "large": MockFunctionCallingLLM()}, models=MODELS
    )


def cached() -> CachedLLM:
    return CachedLLM(MockFunctionCallingLLM(), ExactCache(), scope=SCOPE, model="gpt-4o")


# FunctionAgent's constructor runs inspect.getmembers() over a pydantic model: pydantic's own
# deprecation warnings, not ours.
@pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20:inspect")
@pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince211:inspect")
@pytest.mark.parametrize("streaming", [True, False])
@pytest.mark.parametrize("make", [routed, cached], ids=["RoutedLLM", "CachedLLM"])
async def test_a_function_agent_runs_on_the_wrapper(make: Any, streaming: bool) -> None:
    calls: list[tuple[int, int]] = []
    llm = make()
    assert llm.metadata.is_function_calling_model
    agent = FunctionAgent(tools=[adder(calls)], llm=llm, streaming=streaming)
    result = await agent.run("add please")
    assert calls == [(1, 2)]  # the tool call the model made was read and run
    assert str(result) == "Tool calls complete."


@pytest.mark.parametrize("method", ["chat_with_tools", "stream_chat_with_tools"])
def test_a_routed_chat_with_tools_is_answered_and_annotated_by_the_tier(method: str) -> None:
    llm = routed()
    tool = adder([])
    call = getattr(llm, method)(tools=[tool], user_msg="add please")
    response = call if method == "chat_with_tools" else list(call)[-1]
    route = response.additional_kwargs["tokenbudget_route"]
    assert route["answered_by"] == "gpt-4o-mini"
    [selection] = llm.get_tool_calls_from_response(response)
    assert (selection.tool_name, selection.tool_kwargs) == ("add", {"a": 1, "b": 2})


def test_tool_definitions_are_routed_as_input() -> None:
    llm = routed()
    bare = llm.chat_with_tools(tools=[], user_msg="add please")
    with_tools = llm.chat_with_tools(tools=[adder([])], user_msg="add please")
    bare_in = bare.additional_kwargs["tokenbudget_route"]["input_tokens"]
    assert with_tools.additional_kwargs["tokenbudget_route"]["input_tokens"] > bare_in


def test_a_routed_llm_with_a_tier_that_cannot_call_tools_is_not_a_function_calling_model() -> None:
    llm = RoutedLLM(tiers={"small": MockLLM(), "large": MockFunctionCallingLLM()}, models=MODELS)
    assert not llm.metadata.is_function_calling_model
    with pytest.raises(InvalidInputError) as info:
        llm.chat_with_tools(tools=[adder([])], user_msg="add please")
    assert info.value.field == "tiers"


def test_a_cached_llm_around_an_llm_that_cannot_call_tools_says_so() -> None:
    llm = CachedLLM(MockLLM(), ExactCache(), scope=SCOPE, model="gpt-4o")
    assert not llm.metadata.is_function_calling_model
    with pytest.raises(InvalidInputError) as info:
        llm.chat_with_tools(tools=[adder([])], user_msg="add please")
    assert info.value.field == "llm"


def test_a_cache_hit_carries_the_tool_calls_of_the_answer_it_replays() -> None:
    answered: list[int] = []

    def answer(messages: Any, **kwargs: Any) -> ChatMessage:
        answered.append(1)
        return ChatMessage(
            role="assistant",
            blocks=[
                TextBlock(text="Let me look."),
                ToolCallBlock(tool_call_id="call_1", tool_name="lookup", tool_kwargs={"city": "Paris"}),
                ToolCallBlock(tool_call_id="call_2", tool_name="lookup", tool_kwargs={"city": "Rome"}),
            ],
        )

    wrapped = MockFunctionCallingLLM(response_generator=answer)
    llm = CachedLLM(wrapped, ExactCache(cache_tool_calls=True), scope=SCOPE, model="gpt-4o")
    question = [ChatMessage(role="user", content="Weather in Paris and Rome?")]
    first = llm.chat(question)
    hit = llm.chat(question)
    assert answered == [1]
    assert hit.additional_kwargs["cache_hit"]["kind"] == "exact"
    assert hit.message.blocks == first.message.blocks
    assert llm.get_tool_calls_from_response(hit) == llm.get_tool_calls_from_response(first)
    [streamed] = list(llm.stream_chat(question))
    assert streamed.message.blocks == first.message.blocks
