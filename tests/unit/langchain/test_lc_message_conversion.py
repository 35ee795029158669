"""LangChain messages as the providers' LangChain integrations send them: counted like the payload
langchain-openai builds, and a tool call kept with its results whichever way they are written."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_openai.chat_models.base import _convert_message_to_dict
from lc_fakes import RecordingChatModel, memory, replies

from langchain_tokenbudget import (
    ContextWindowMiddleware,
    SummaryChatMessageHistory,
    TokenBudgetChatMessageHistory,
    to_core_messages,
    to_core_request,
)
from tokenbudget_core import InvalidMessageError, TokenCounter

COUNTER = TokenCounter.for_model("gpt-4o")
FILLER = "word " * 60


def adapter_count(messages: Sequence[BaseMessage]) -> int:
    return int(COUNTER.count_messages(to_core_request(messages)))


def payload_count(messages: Sequence[BaseMessage]) -> int:
    """The count of what langchain-openai puts in the request body for these messages."""
    return int(COUNTER.count_messages([_convert_message_to_dict(m) for m in messages]))


def calls_and_results(messages: Sequence[BaseMessage]) -> tuple[set[str], set[str]]:
    """Ids of the tool calls kept and of the results kept, in any of LangChain's shapes."""
    calls: set[str] = set()
    results: set[str] = set()
    for m in messages:
        if isinstance(m, AIMessage):
            calls |= {c["id"] or "" for c in [*m.tool_calls, *m.invalid_tool_calls]}
            if "function_call" in m.additional_kwargs:
                calls.add(m.additional_kwargs["function_call"]["name"])
        elif isinstance(m, ToolMessage):
            results.add(m.tool_call_id)
        elif isinstance(m, FunctionMessage):
            results.add(m.name)
        elif isinstance(m, HumanMessage) and isinstance(m.content, list):
            results |= {
                b["tool_use_id"] for b in m.content if isinstance(b, dict) and b.get("type") == "tool_result"
            }
    return calls, results


def windows(history: list[BaseMessage], smallest: int, step: int = 10) -> list[list[BaseMessage]]:
    """The window TokenBudgetChatMessageHistory returns at each budget from ``smallest`` to one that
    keeps everything."""
    out = []
    for budget in range(smallest, adapter_count(history) + step, step):
        h = TokenBudgetChatMessageHistory(memory(history), model="gpt-4o", max_tokens=budget)
        out.append(h.messages)
    return out


def turns(n: int) -> list[BaseMessage]:
    return [HumanMessage(FILLER) if i % 2 == 0 else AIMessage(FILLER) for i in range(n)]


# -- Anthropic's tool_use / tool_result content blocks ------------------------------------------


def anthropic_tool_turn(ids: Sequence[str], *, calls_in_tool_calls: bool = True) -> list[BaseMessage]:
    """A Claude tool turn as langchain-anthropic writes it: the calls as ``tool_use`` blocks (and
    in ``tool_calls``), every result a ``tool_result`` block of one user message."""
    uses = [{"type": "tool_use", "id": i, "name": "weather", "input": {"city": i}} for i in ids]
    tool_calls = [{"id": i, "name": "weather", "args": {"city": i}} for i in ids]
    call = AIMessage(
        [{"type": "text", "text": "Let me check."}, *uses],
        tool_calls=tool_calls if calls_in_tool_calls else [],
    )
    results = HumanMessage(
        [{"type": "tool_result", "tool_use_id": i, "content": f"sunny in {i} " * 40} for i in ids]
    )
    return [call, results]


@pytest.mark.parametrize("ids", [["toolu_a"], ["toolu_a", "toolu_b"]], ids=["one call", "parallel calls"])
def test_a_claude_tool_call_and_its_tool_result_message_are_kept_or_dropped_together(ids: list[str]) -> None:
    history = [
        SystemMessage("You are terse."),
        HumanMessage("Weather?"),
        *anthropic_tool_turn(ids),
        AIMessage("It is sunny. " * 40),
        *turns(6),
    ]
    seen = set()
    for window in windows(history, 300):
        calls, results = calls_and_results(window)
        assert calls == results, [type(m).__name__ for m in window]
        seen.add(bool(calls))
    assert seen == {True, False}  # some budgets keep the tool turn, smaller ones drop it whole


def test_tool_use_blocks_without_tool_calls_are_still_the_calls_their_results_answer() -> None:
    history = [HumanMessage("Weather?"), *anthropic_tool_turn(["toolu_a"], calls_in_tool_calls=False)]
    history += [AIMessage("It is sunny. " * 40), *turns(4)]
    for window in windows(history, 200):
        kept_call = any(isinstance(m, AIMessage) and isinstance(m.content, list) for m in window)
        kept_result = any(isinstance(m, HumanMessage) and isinstance(m.content, list) for m in window)
        assert kept_call == kept_result


def test_a_tool_result_block_without_its_call_is_refused_like_a_tool_message() -> None:
    orphan = HumanMessage([{"type": "tool_result", "tool_use_id": "toolu_x", "content": "sunny"}])
    h = TokenBudgetChatMessageHistory(memory([HumanMessage("hi"), orphan]), model="gpt-4o", max_tokens=500)
    with pytest.raises(InvalidMessageError, match="toolu_x"):
        h.messages


def test_a_tool_result_block_without_an_id_is_a_clear_error() -> None:
    bad = HumanMessage([{"type": "tool_result", "content": "sunny"}])
    with pytest.raises(InvalidMessageError) as e:
        to_core_messages([HumanMessage("hi"), bad])
    assert e.value.field == "messages[1].content[0].tool_use_id"


def test_a_tool_use_block_without_an_id_is_a_clear_error() -> None:
    bad = AIMessage([{"type": "tool_use", "name": "weather", "input": {"city": "Oslo"}}])
    with pytest.raises(InvalidMessageError) as e:
        to_core_request([HumanMessage("hi"), bad])
    assert e.value.field == "messages[1].content[0].id"


def test_a_tool_result_message_counts_its_results_text() -> None:
    long = anthropic_tool_turn(["toolu_a"])
    short = [long[0], HumanMessage([{"type": "tool_result", "tool_use_id": "toolu_a", "content": "ok"}])]
    assert adapter_count(long) - adapter_count(short) == COUNTER.count(
        "sunny in toolu_a " * 40
    ) - COUNTER.count("ok")


# -- invalid tool calls (malformed arguments) ----------------------------------------------------


def malformed_call_turn() -> list[BaseMessage]:
    call = AIMessage(
        "",
        invalid_tool_calls=[
            {
                "type": "invalid_tool_call",
                "id": "call_1",
                "name": "get_weather",
                "args": '{"city": "Par',
                "error": "bad json",
            }
        ],
    )
    return [
        call,
        ToolMessage("Error: invalid arguments, please retry", tool_call_id="call_1", status="error"),
    ]


def test_a_call_with_malformed_arguments_counts_as_langchain_openai_sends_it() -> None:
    messages = [HumanMessage("Weather?"), *malformed_call_turn()]
    assert adapter_count(messages[:2]) == payload_count(messages[:2])
    assert adapter_count(messages) == payload_count(messages)


def test_a_result_answering_a_malformed_call_is_kept_with_it() -> None:
    history = [HumanMessage("Weather?"), *malformed_call_turn(), AIMessage("Retrying."), *turns(4)]
    seen = set()
    for window in windows(history, 80):
        calls, results = calls_and_results(window)
        assert calls == results
        seen.add(bool(calls))
    assert seen == {True, False}

    summary = SummaryChatMessageHistory(
        memory(), summariser=replies(*["summary"] * 5), model="gpt-4o", max_tokens=1000
    )
    summary.add_messages(history)
    assert calls_and_results(summary.messages) == ({"call_1"}, {"call_1"})


def test_the_context_middleware_sends_a_malformed_call_with_its_result() -> None:
    model: RecordingChatModel = replies("It is sunny.")
    agent: Any = create_agent(model, middleware=[ContextWindowMiddleware("gpt-4o", max_tokens=1000)])
    agent.invoke({"messages": [HumanMessage("Weather?"), *malformed_call_turn()]})
    assert calls_and_results(model.received[0]) == ({"call_1"}, {"call_1"})


# -- what langchain-openai leaves out or writes differently --------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        {"city": "Paris"},
        {"city": "東京都千代田区丸の内一丁目", "note": "明日の天気"},
        {"text": "🎉🎉 party 🥳"},
    ],
    ids=["ascii", "cjk", "emoji"],
)
def test_tool_call_arguments_count_as_sent_unescaped(args: dict[str, str]) -> None:
    messages = [
        HumanMessage("x"),
        AIMessage("", tool_calls=[{"id": "a", "name": "post", "args": args}]),
        ToolMessage("ok", tool_call_id="a"),
    ]
    assert adapter_count(messages) == payload_count(messages)
    assert (
        to_core_messages(messages)[1].tool_calls[0].arguments
        == _convert_message_to_dict(messages[1])["tool_calls"][0]["function"]["arguments"]
    )


def test_a_tool_messages_name_is_not_counted_as_langchain_openai_does_not_send_it() -> None:
    calls = [{"id": f"call_{i}", "name": "get_current_weather", "args": {"c": i}} for i in range(3)]
    messages: list[BaseMessage] = [HumanMessage("Weather?"), AIMessage("", tool_calls=calls)]
    messages += [ToolMessage("sunny", tool_call_id=f"call_{i}", name="get_current_weather") for i in range(3)]
    assert adapter_count(messages) == payload_count(messages)


def test_legacy_function_calling_counts_as_sent_and_stays_together() -> None:
    call = AIMessage(
        "", additional_kwargs={"function_call": {"name": "get_weather", "arguments": '{"c": "P"}'}}
    )
    result = FunctionMessage(content="sunny " * 5, name="get_weather")
    history = [HumanMessage("Weather?"), call, result, AIMessage("It is sunny."), *turns(2)]
    assert adapter_count(history) == payload_count(history)
    seen = set()
    for window in windows(history, 70, step=5):
        calls, results = calls_and_results(window)
        assert calls == results
        seen.add(bool(calls))
    assert seen == {True, False}
