"""Review of the LangChain adapters (s28): summaries that survive a prune and fold in one go,
Responses-API calls counted once, malformed calls in the LLM cache, non-JSON arguments named,
a BudgetMiddleware that could not see the summaries refused, copy-returning histories."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, RemoveMessage
from langgraph.checkpoint.memory import InMemorySaver

from langchain_tokenbudget import (
    BudgetMiddleware,
    ContextWindowMiddleware,
    SummaryChatMessageHistory,
    TokenBudgetChatMessageHistory,
    TokenBudgetLLMCache,
    TrimMessagesRunnable,
)
from langchain_tokenbudget.llm_cache import to_cache_request
from langchain_tokenbudget.messages import to_countable_message
from tokenbudget_core import TokenCounter
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.cache_keys import CacheScope
from tokenbudget_core.errors import InvalidInputError, InvalidMessageError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report
from tokenbudget_core.response_cache import ExactCache


class Recording(GenericFakeChatModel):
    """A fake chat model that keeps every prompt it was sent."""

    seen: list[list[BaseMessage]] = []  # noqa: RUF012 - a pydantic field (copied per instance)

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        self.seen.append(messages)
        return super()._generate(messages, *args, **kwargs)


def summariser() -> Recording:
    return Recording(seen=[], messages=iter([f"SUMMARY#{i}: the user is Ada from Lyon" for i in range(500)]))


def transcript(turns: int) -> list[BaseMessage]:
    out: list[BaseMessage] = []
    for i in range(turns):
        out += [HumanMessage(f"question {i} " + "word " * 60), AIMessage(f"answer {i} " + "word " * 60)]
    return [*out, HumanMessage("final?")]


# -- ContextWindowMiddleware(strategy="summarise") --------------------------------------------------


def summarised_thread() -> tuple[Any, Recording, Any]:
    """An agent whose thread ran 8 long turns (a summary was written), its model and config."""
    main = Recording(seen=[], messages=iter(["answer " + "blah " * 80 for _ in range(50)]))
    context = ContextWindowMiddleware("gpt-4o", max_tokens=800, strategy="summarise", summariser=summariser())
    agent = create_agent(
        main, system_prompt="Be helpful.", checkpointer=InMemorySaver(), middleware=[context]
    )
    config: Any = {"configurable": {"thread_id": "t"}}
    for i in range(8):
        agent.invoke({"messages": [HumanMessage(f"q{i} " + "text " * 80)]}, config)
    return agent, main, config


def test_a_summary_survives_a_prune_of_the_oldest_messages() -> None:
    """The usual retention job deletes the oldest messages (the summarised ones and a few after
    them): the summary is now their only record and must still reach the model."""
    agent, main, config = summarised_thread()
    state = agent.get_state(config).values
    summary = state["tokenbudget_summary"]
    assert summary
    assert state["tokenbudget_folded"] > 0
    agent.update_state(config, {"messages": [RemoveMessage(id=m.id) for m in state["messages"][:-4]]})
    agent.invoke({"messages": [HumanMessage("what is my name?")]}, config)
    assert agent.get_state(config).values["tokenbudget_summary"] is not None
    assert summary in str(main.seen[-1][0].content)  # the system prompt the model got carries it


def test_a_reset_thread_still_drops_the_old_summary() -> None:
    """When none of the messages the summary knew is left (the thread was cleared and refilled),
    the old conversation's summary must not leak into the new one."""
    agent, main, config = summarised_thread()
    old = agent.get_state(config).values
    assert old["tokenbudget_summary"]
    agent.update_state(config, {"messages": [RemoveMessage(id=m.id) for m in old["messages"]]})
    agent.invoke({"messages": [HumanMessage("hello, new conversation")]}, config)
    assert "SUMMARY#" not in str(main.seen[-1][0].content)


@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
def test_a_long_transcript_is_folded_in_as_few_calls_as_the_history_makes(how: str) -> None:
    """An existing conversation handed to the agent is summarised in chunks, like
    SummaryChatMessageHistory does, not with a paid call per few messages."""
    history_writer = summariser()
    history = SummaryChatMessageHistory(summariser=history_writer, model="gpt-4o", max_tokens=2_000)
    history.add_messages(transcript(40))
    assert history.messages
    writer = summariser()
    agent = create_agent(
        GenericFakeChatModel(messages=iter(["done"])),
        middleware=[
            ContextWindowMiddleware("gpt-4o", max_tokens=2_000, strategy="summarise", summariser=writer)
        ],
    )
    payload = {"messages": transcript(40)}
    out = agent.invoke(payload) if how == "invoke" else asyncio.run(agent.ainvoke(payload))
    assert out["tokenbudget_summary"]
    assert 1 <= len(writer.seen) <= len(history_writer.seen)


def test_a_budget_middleware_listed_first_is_refused_not_bypassed() -> None:
    """Listed before the context middleware, a BudgetMiddleware would never see the summary calls
    (paid, never charged): the run is refused by name and nothing is left reserved."""
    ledger = Ledger("memory://", policy=BudgetPolicy(user_daily_tokens=1_000_000))
    writer = summariser()
    agent = create_agent(
        GenericFakeChatModel(messages=iter(["done"])),
        middleware=[
            BudgetMiddleware(ledger, model="gpt-4o-mini", user="ana", feature="chat"),
            ContextWindowMiddleware("gpt-4o-mini", max_tokens=800, strategy="summarise", summariser=writer),
        ],
    )
    with pytest.raises(InvalidInputError) as refused:
        agent.invoke({"messages": transcript(20)})
    assert refused.value.field == "middleware"
    assert writer.seen == []  # no summary went out unseen
    assert build_report(ledger, last_days=1).totals.requests == 0
    assert set(ledger.state(feature="chat", user="ana").used.values()) == {0}  # released


def test_summary_settings_with_the_trim_strategy_are_refused() -> None:
    for name, value in (("summariser", summariser()), ("summary_tokens", 200), ("low_water", 0.5)):
        with pytest.raises(InvalidInputError) as refused:
            ContextWindowMiddleware("gpt-4o", max_tokens=1_000, **{name: value})
        assert refused.value.field == name


# -- counting what is sent ----------------------------------------------------------------------------


def test_a_responses_api_tool_call_is_counted_once() -> None:
    """langchain-openai's Responses API keeps each call both as a ``function_call`` content block
    and in ``tool_calls``, and sends it once: it is counted once."""
    from langchain_openai.chat_models.base import _construct_lc_result_from_responses_api
    from openai.types.responses import Response

    arguments = '{"query": "' + "long query words " * 40 + '"}'
    response = Response.model_validate(
        {
            "id": "resp_1", "object": "response", "created_at": 0, "model": "gpt-4.1",
            "status": "completed", "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
            "output": [
                {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "search",
                 "arguments": arguments, "status": "completed"},
            ],
        }
    )  # fmt: skip
    message = (
        _construct_lc_result_from_responses_api(response, output_version="responses/v1")
        .generations[0]
        .message
    )
    assert [b["type"] for b in message.content] == ["function_call"]
    assert message.tool_calls
    counter = TokenCounter.for_model("gpt-4.1")
    once = AIMessage("", tool_calls=message.tool_calls)  # type: ignore[attr-defined]
    core = to_countable_message(message)
    assert len(core.tool_calls) == 1
    assert counter.count_messages([core]) == counter.count_messages([to_countable_message(once)])


def test_a_function_call_block_alone_is_the_call() -> None:
    message = AIMessage(
        [{"type": "function_call", "call_id": "c9", "name": "lookup", "arguments": '{"id": 7}'}]
    )
    core = to_countable_message(message)
    assert [(c.id, c.name, c.arguments) for c in core.tool_calls] == [("c9", "lookup", '{"id": 7}')]


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (AIMessage("", tool_calls=[{"name": "f", "args": {"when": datetime.date(2026, 1, 2)}, "id": "c1"}]),
         "messages[1].tool_calls[0].args"),
        (AIMessage([{"type": "tool_use", "id": "t1", "name": "f", "input": {"tags": {"a"}}}]),
         "messages[1].content[0].input"),
    ],
)  # fmt: skip
def test_arguments_that_are_not_json_are_named(message: AIMessage, field: str) -> None:
    with pytest.raises(InvalidMessageError) as refused:
        TrimMessagesRunnable("gpt-4o", max_tokens=1_000).invoke([HumanMessage("hi"), message])
    assert refused.value.field == field


# -- the LLM cache ------------------------------------------------------------------------------------

BAD_CALL = {
    "type": "invalid_tool_call",
    "name": "search",
    "args": '{"q": ',
    "id": "call_1",
    "error": "bad json",
}


def test_a_cached_malformed_call_comes_back_as_one() -> None:
    bad = AIMessage("", invalid_tool_calls=[BAD_CALL], response_metadata={"finish_reason": "tool_calls"})
    cache = TokenBudgetLLMCache(ExactCache(cache_tool_calls=True), scope=CacheScope(tenant="t"))
    model = GenericFakeChatModel(messages=iter([bad, AIMessage("second answer")]), cache=cache)
    first, again = model.invoke("look it up"), model.invoke("look it up")
    assert "tokenbudget_cache" in again.response_metadata
    assert again.invalid_tool_calls == first.invalid_tool_calls  # type: ignore[attr-defined]


def test_a_malformed_call_is_a_tool_call_answer_not_cached_by_default() -> None:
    bad = AIMessage("", invalid_tool_calls=[BAD_CALL])
    cache = TokenBudgetLLMCache(ExactCache(), scope=CacheScope(tenant="t"))
    model = GenericFakeChatModel(messages=iter([bad, AIMessage("second answer")]), cache=cache)
    model.invoke("look something up")
    assert model.invoke("look something up").content == "second answer"


def _history(args: str) -> list[BaseMessage]:
    call = {"type": "invalid_tool_call", "name": "search", "args": args, "id": "c1", "error": None}
    return [HumanMessage("find flights"), AIMessage("", invalid_tool_calls=[call]), HumanMessage("try again")]


def _legacy(arguments: str) -> list[BaseMessage]:
    """A legacy ``function_call`` (sent when the message has no tool calls)."""
    extra = {"function_call": {"name": "f", "arguments": arguments}}
    return [HumanMessage("find flights"), AIMessage("", additional_kwargs=extra), HumanMessage("try again")]


def test_histories_differing_only_in_what_was_sent_of_a_call_are_other_requests() -> None:
    cache = TokenBudgetLLMCache(ExactCache(), scope=CacheScope(tenant="t"))
    model = GenericFakeChatModel(messages=iter([AIMessage("for Paris"), AIMessage("for Tokyo")]), cache=cache)
    assert model.invoke(_history('{"city": "Paris"')).content == "for Paris"
    assert model.invoke(_history('{"city": "Tokyo"')).content == "for Tokyo"
    one, two = (to_cache_request(dumps(_legacy(a)), "llm") for a in ('{"a": 1}', '{"a": 2}'))
    assert one.messages != two.messages


# -- chat histories -----------------------------------------------------------------------------------


class CopyingHistory(BaseChatMessageHistory):
    """Hands back new objects on every read, as SQL, Redis and file histories do."""

    def __init__(self) -> None:
        self.kept: list[BaseMessage] = []

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        return [m.model_copy(deep=True) for m in self.kept]

    def add_messages(self, messages: Any) -> None:
        self.kept.extend(messages)

    def clear(self) -> None:
        self.kept = []


def test_a_replaced_message_in_a_copying_store_is_counted_again() -> None:
    store = CopyingHistory()
    history = TokenBudgetChatMessageHistory(store, model="gpt-4o", max_tokens=400)
    call = {"type": "invalid_tool_call", "name": "f", "args": "x", "id": "c1", "error": None}
    history.add_messages(
        [HumanMessage("hello"), AIMessage("", invalid_tool_calls=[call]), HumanMessage("q " * 150)]
    )
    assert len(history.messages) == 3
    store.kept[1] = AIMessage("", invalid_tool_calls=[{**call, "args": "y " * 300}])
    assert history.messages == TrimMessagesRunnable("gpt-4o", max_tokens=400).invoke(store.messages)


@pytest.mark.parametrize("kind", [TokenBudgetChatMessageHistory, SummaryChatMessageHistory])
def test_convenience_adds_name_what_is_not_a_message(kind: type) -> None:
    history = (
        kind(model="gpt-4o", max_tokens=1_000)
        if kind is TokenBudgetChatMessageHistory
        else kind(summariser=summariser(), model="gpt-4o", max_tokens=1_000)
    )
    for add in (history.add_user_message, history.add_ai_message):
        with pytest.raises(InvalidMessageError) as refused:
            add(5)
        assert refused.value.field == "message"
    history.add_user_message("hi")
    history.add_ai_message([{"type": "text", "text": "hello"}])
    assert [m.type for m in history.messages] == ["human", "ai"]
