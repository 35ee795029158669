"""TrimMessagesRunnable in real LCEL chains and as a LangGraph pre_model_hook."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnableLambda
from langgraph.warnings import LangGraphDeprecatedSinceV10
from lc_fakes import (
    WEATHER_TOOL,
    assert_tool_pairs_intact,
    conversation,
    get_weather,
    replies,
    tokens,
    weather_call,
)

from langchain_tokenbudget import TrimMessagesRunnable
from tokenbudget_core import InvalidInputError, InvalidMessageError, UnknownModelError
from tokenbudget_core.errors import ContextOverflowError

BUDGET = 500


def test_lcel_prompt_trim_model() -> None:
    history = conversation(20)
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are terse."), MessagesPlaceholder("history"), ("human", "{question}")]
    )
    model = replies("Sunny.")
    chain = prompt | TrimMessagesRunnable("gpt-4o", max_tokens=BUDGET, pin_first_user=True) | model
    answer = chain.invoke({"history": history, "question": "And tomorrow?"})

    assert answer.content == "Sunny."
    [received] = model.received
    assert tokens(received) <= BUDGET < tokens([SystemMessage("You are terse."), *history])
    assert received[0].content == "You are terse."
    assert received[1].content == history[0].content  # pinned first user message
    assert received[-1].content == "And tomorrow?"
    assert_tool_pairs_intact(received)
    assert not isinstance(received[2], AIMessage)  # never starts on an orphaned reply


async def test_lcel_async() -> None:
    history = conversation(20)
    model = replies("Sunny.")
    chain = TrimMessagesRunnable("gpt-4o", max_tokens=BUDGET) | model
    answer = await chain.ainvoke([*history, HumanMessage("And tomorrow?")])
    assert answer.content == "Sunny."
    [received] = model.received
    assert tokens(received) <= BUDGET
    assert received[-1].content == "And tomorrow?"
    assert_tool_pairs_intact(received)


def test_returns_the_callers_own_messages_and_accepts_other_chat_inputs() -> None:
    history = conversation(20)
    trim = TrimMessagesRunnable("gpt-4o", max_tokens=BUDGET)
    kept = trim.invoke(history)
    assert all(any(k is h for h in history) for k in kept)
    assert kept[-1] is history[-1]
    assert [m.content for m in trim.invoke("just this")] == ["just this"]
    as_tuples = [("user", "hi"), ("assistant", "hello")]
    assert [m.type for m in trim.invoke(as_tuples)] == ["human", "ai"]
    assert trim.batch([history, history[:2]])[1] == history[:2]


def test_tools_and_a_later_system_prompt_count_but_are_not_emitted() -> None:
    history = conversation(20)
    bare = TrimMessagesRunnable("gpt-4o", max_tokens=BUDGET).invoke(history)
    system = "Always answer in Celsius and mention the wind. " * 5
    loaded = TrimMessagesRunnable("gpt-4o", max_tokens=BUDGET, tools=[get_weather], system_prompt=system)
    kept = loaded.invoke(history)
    assert len(kept) < len(bare)
    assert not any(isinstance(m, SystemMessage) for m in kept)
    assert tokens([SystemMessage(system), *kept], [WEATHER_TOOL]) <= BUDGET


def test_as_a_pre_model_hook_the_state_keeps_everything() -> None:
    from langgraph.prebuilt import create_react_agent

    history = [*conversation(20), HumanMessage("Weather in Oslo?")]
    model = replies(weather_call("call_oslo", "Oslo"), "18C in Oslo.")
    hook = TrimMessagesRunnable(
        "gpt-4o", max_tokens=BUDGET, tools=[get_weather], system_prompt="Be brief.", pin_first_user=True
    )
    with pytest.warns(LangGraphDeprecatedSinceV10):  # the host's own deprecation of create_react_agent
        agent = create_react_agent(model, [get_weather], prompt="Be brief.", pre_model_hook=hook)
    out = agent.invoke({"messages": history})

    assert len(model.received) == 2
    for received in model.received:
        assert tokens(received, [WEATHER_TOOL]) <= BUDGET
        assert received[0].content == "Be brief."
        assert received[1].content == history[0].content
        assert_tool_pairs_intact(received)
    assert len(out["messages"]) == len(history) + 3


def test_state_dict_input_gives_llm_input_messages() -> None:
    history = conversation(20)
    trim = TrimMessagesRunnable("gpt-4o", max_tokens=BUDGET)
    update = trim.invoke({"messages": history, "other": 1})
    assert set(update) == {"llm_input_messages"}
    assert update["llm_input_messages"] == trim.invoke(history)


async def test_state_dict_async() -> None:
    trim = TrimMessagesRunnable("gpt-4o", max_tokens=BUDGET)
    update = await trim.ainvoke({"messages": conversation(20)})
    assert tokens(update["llm_input_messages"]) <= BUDGET


def test_truncate_shortens_only_the_copy_sent_on() -> None:
    huge = HumanMessage("please read this " * 300)
    trim = TrimMessagesRunnable("gpt-4o", max_tokens=BUDGET, on_overflow="truncate")
    [kept] = trim.invoke([huge])
    assert tokens([kept]) <= BUDGET
    assert kept.content.endswith("please read this ")
    assert len(huge.content) > len(kept.content)


def test_truncate_shortens_a_message_made_of_blocks_and_keeps_its_image() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}}
    huge = HumanMessage(content=[{"type": "text", "text": "please read this " * 300}, image])
    trim = TrimMessagesRunnable("gpt-4o", max_tokens=BUDGET, on_overflow="truncate")
    [kept] = trim.invoke([huge])
    assert tokens([kept]) <= BUDGET
    assert kept.content[0]["text"].endswith("please read this ")  # type: ignore[index]
    assert kept.content[1:] == [image]
    assert len(huge.content[0]["text"]) == len("please read this " * 300)  # type: ignore[index]


def test_runs_are_traced_under_the_runnable_name() -> None:
    from langchain_core.tracers.context import collect_runs

    with collect_runs() as cb:
        TrimMessagesRunnable("gpt-4o", max_tokens=BUDGET).invoke(conversation(2))
    assert [r.name for r in cb.traced_runs] == ["TrimMessagesRunnable"]


# -- bad input ---------------------------------------------------------------------------------


def test_overflow_is_a_clear_error() -> None:
    trim = TrimMessagesRunnable("gpt-4o", max_tokens=100)
    with pytest.raises(ContextOverflowError) as info:
        trim.invoke([HumanMessage("word " * 200)])
    assert info.value.limit == 100
    assert "on_overflow='truncate'" in str(info.value)


@pytest.mark.parametrize(
    "value",
    [42, {"not_messages": []}, [object()], {"messages": 42}],
    ids=["int", "dict-without-messages", "object", "state-with-a-number"],
)
def test_bad_input_is_named(value: Any) -> None:
    trim = TrimMessagesRunnable("gpt-4o", max_tokens=BUDGET)
    with pytest.raises(InvalidMessageError):
        trim.invoke(value)


def test_bad_options_and_tools() -> None:
    with pytest.raises(InvalidInputError, match="max_tokens"):
        TrimMessagesRunnable("gpt-4o", max_tokens=-5)
    with pytest.raises(InvalidInputError, match=r"tools\[0\]"):
        TrimMessagesRunnable("gpt-4o", max_tokens=100, tools=[42])
    with pytest.raises(UnknownModelError):
        TrimMessagesRunnable("not-a-model", max_tokens=100)
    with pytest.raises(ContextOverflowError):  # the tools alone leave no room
        TrimMessagesRunnable("gpt-4o", max_tokens=20, tools=[get_weather])
    with pytest.raises(InvalidInputError) as info:
        TrimMessagesRunnable("gpt-4o", max_tokens=100, reserve_output=200)
    assert info.value.field == "reserve_output"
    with pytest.raises(InvalidInputError, match="system_prompt"):
        TrimMessagesRunnable("gpt-4o", max_tokens=100, system_prompt=5)  # type: ignore[arg-type]


def test_composes_with_other_runnables() -> None:
    chain = RunnableLambda(lambda n: conversation(n)) | TrimMessagesRunnable("gpt-4o", max_tokens=BUDGET)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kept = chain.invoke(20)
    assert tokens(kept) <= BUDGET
