"""ContextWindowMiddleware inside a real create_agent agent: what the model received."""

from __future__ import annotations

import asyncio
import base64
import itertools
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, RemoveMessage, SystemMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph.message import REMOVE_ALL_MESSAGES
from lc_fakes import (
    WEATHER_TOOL,
    RecordingChatModel,
    assert_tool_pairs_intact,
    conversation,
    get_weather,
    replies,
    system_of,
    tokens,
    weather_call,
)

from langchain_tokenbudget import BudgetMiddleware, ContextWindowMiddleware
from langchain_tokenbudget.messages import to_core_request
from tokenbudget_core import (
    InvalidInputError,
    TokenBudgetError,
    TokenCounter,
    UnknownModelError,
    Usage,
    cost_of,
)
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.counting import PDF_PAGE_TOKENS
from tokenbudget_core.errors import BudgetExceededError, ContextOverflowError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report

SYSTEM = "You are a weather bot. Answer in one sentence."
BUDGET = 600


def agent_with(model: RecordingChatModel, *middleware: ContextWindowMiddleware, **kwargs: Any) -> Any:
    return create_agent(
        model, tools=[get_weather], system_prompt=SYSTEM, middleware=list(middleware), **kwargs
    )


def tool_turn() -> RecordingChatModel:
    """The model asks for the weather in Oslo, then answers: two model calls per run."""
    return replies(weather_call("call_oslo", "Oslo"), "It is 18C and sunny in Oslo.")


def check_received(received: list[BaseMessage], history: list[BaseMessage], budget: int = BUDGET) -> None:
    assert tokens(received, [WEATHER_TOOL]) <= budget
    assert isinstance(received[0], SystemMessage)
    assert received[0].content.startswith(SYSTEM)  # type: ignore[union-attr]
    assert received[1] is history[0] or received[1].content == history[0].content  # pinned first user
    assert_tool_pairs_intact(received)
    assert len(received) < len(history)


def test_without_the_middleware_the_model_gets_everything() -> None:
    """The baseline the other tests improve on: the same run blows the budget."""
    history = conversation(20)
    model = tool_turn()
    agent_with(model).invoke({"messages": [*history, HumanMessage("Weather in Oslo?")]})
    assert tokens(model.received[0], [WEATHER_TOOL]) > BUDGET


def test_trim_fits_every_model_call_and_keeps_the_transcript() -> None:
    history = [*conversation(20), HumanMessage("Weather in Oslo?")]
    model = tool_turn()
    middleware = ContextWindowMiddleware("gpt-4o", max_tokens=BUDGET, pin_first_user=True)
    out = agent_with(model, middleware).invoke({"messages": history})

    assert len(model.received) == 2  # the tool call, then the answer
    first, second = model.received
    check_received(first, history)
    assert first[-1].content == "Weather in Oslo?"
    check_received(second, history)
    assert [type(m).__name__ for m in second[-3:]] == ["HumanMessage", "AIMessage", "ToolMessage"]
    assert second[-1].content == "18C and sunny in Oslo"  # the real tool ran
    # the state is untouched: every message of the input, then the new ones
    assert [m.content for m in out["messages"][: len(history)]] == [m.content for m in history]
    assert len(out["messages"]) == len(history) + 3
    assert "tokenbudget_summary" not in out


async def test_trim_async() -> None:
    history = [*conversation(20), HumanMessage("Weather in Oslo?")]
    model = tool_turn()
    middleware = ContextWindowMiddleware("gpt-4o", max_tokens=BUDGET, pin_first_user=True)
    out = await agent_with(model, middleware).ainvoke({"messages": history})
    assert len(model.received) == 2
    for received in model.received:
        check_received(received, history)
    assert len(out["messages"]) == len(history) + 3


def test_system_prompt_and_tools_count_against_the_budget() -> None:
    history = [*conversation(20), HumanMessage("Weather?")]
    plain, wordy = replies("ok"), replies("ok")
    middleware = ContextWindowMiddleware("gpt-4o", max_tokens=BUDGET)
    create_agent(plain, middleware=[middleware]).invoke({"messages": history})
    long_prompt = "Always be precise about temperatures and units. " * 20
    create_agent(wordy, tools=[get_weather], system_prompt=long_prompt, middleware=[middleware]).invoke(
        {"messages": history}
    )
    [bare], [heavy] = plain.received, wordy.received
    assert tokens(bare) <= BUDGET
    assert tokens(heavy, [WEATHER_TOOL]) <= BUDGET
    assert len(heavy) - 1 < len(bare)  # fewer turns fit beside the system prompt and tool
    assert heavy[0].content == long_prompt


def test_without_pinning_the_first_user_message_slides_out() -> None:
    history = [*conversation(20), HumanMessage("Weather?")]
    model = replies("ok")
    agent_with(model, ContextWindowMiddleware("gpt-4o", max_tokens=BUDGET)).invoke({"messages": history})
    assert all(m.content != history[0].content for m in model.received[0])


def test_a_system_prompt_over_budget_is_a_clear_error() -> None:
    agent = create_agent(
        replies("never"),
        system_prompt="word " * 400,
        middleware=[ContextWindowMiddleware("gpt-4o", max_tokens=300)],
    )
    with pytest.raises(ContextOverflowError) as info:
        agent.invoke({"messages": [HumanMessage("hi")]})
    assert info.value.limit == 300
    assert info.value.required > 300


def test_truncate_shortens_an_oversized_newest_message_for_the_model_only() -> None:
    huge = HumanMessage("please read this " * 300)
    model = replies("ok")
    middleware = ContextWindowMiddleware("gpt-4o", max_tokens=BUDGET, on_overflow="truncate")
    out = agent_with(model, middleware).invoke({"messages": [huge]})
    [received] = model.received
    assert tokens(received, [WEATHER_TOOL]) <= BUDGET
    assert received[-1].content.endswith("please read this ")
    assert out["messages"][0].content == huge.content  # the state keeps the full text


# -- summarise ---------------------------------------------------------------------------------

SUMMARY = "Ada lives in Lyon and keeps asking about the weather."


def summarising(writer: RecordingChatModel, budget: int = 800) -> ContextWindowMiddleware:
    return ContextWindowMiddleware(
        "gpt-4o", max_tokens=budget, pin_first_user=True, strategy="summarise", summariser=writer
    )


def test_summarise_puts_the_summary_in_the_system_message_and_the_state() -> None:
    history = [*conversation(20), HumanMessage("Weather in Oslo?")]
    model = replies(weather_call("call_oslo", "Oslo"), "It is 18C and sunny in Oslo.", "You're welcome.")
    writer = replies(*[SUMMARY] * 20)
    config = {"configurable": {"thread_id": "ada"}}
    agent = agent_with(model, summarising(writer), checkpointer=InMemorySaver())
    out = agent.invoke({"messages": history}, config)

    for received in model.received:
        check_received(received, history, budget=800)
        assert received[0].content.startswith(SYSTEM)
        assert received[0].content.endswith(SUMMARY)
        assert sum(isinstance(m, SystemMessage) for m in received) == 1
    # the summariser got the core's prompt, with the old turns in it
    prompt = writer.received[0]
    assert "running summary" in str(prompt[0].content)
    assert "Nice to meet you, Ada." in str(prompt[1].content)
    assert out["tokenbudget_summary"] == SUMMARY
    assert len(out["messages"]) == len(history) + 3

    # the next turn of the same thread resumes the stored summary: no old turn is re-folded
    calls = len(writer.received)
    agent.invoke({"messages": [HumanMessage("Thanks!")]}, config)
    assert all("Nice to meet you" not in str(p[1].content) for p in writer.received[calls:])
    assert model.received[-1][-1].content == "Thanks!"
    assert model.received[-1][0].content.endswith(SUMMARY)  # type: ignore[union-attr]
    assert agent.get_state(config).values["tokenbudget_folded"] > 0


async def test_summarise_async_awaits_the_summariser() -> None:
    history = [*conversation(20), HumanMessage("Weather in Oslo?")]
    model, writer = tool_turn(), replies(*[SUMMARY] * 20)
    out = await agent_with(model, summarising(writer)).ainvoke({"messages": history})
    assert writer.received
    assert out["tokenbudget_summary"] == SUMMARY
    for received in model.received:
        check_received(received, history, budget=800)
        assert system_of(received).endswith(SUMMARY)


def test_summarise_without_a_system_prompt_sends_the_summary_as_a_system_message() -> None:
    history = [*conversation(20), HumanMessage("Weather?")]
    model, writer = replies("ok"), replies(*[SUMMARY] * 20)
    create_agent(model, middleware=[summarising(writer)]).invoke({"messages": history})
    [received] = model.received
    assert isinstance(received[0], SystemMessage)
    assert received[0].content.endswith(SUMMARY)
    assert tokens(received) <= 800


def test_summary_is_appended_as_a_block_to_a_system_message_made_of_blocks() -> None:
    blocks = [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}]
    model, writer = replies("ok"), replies(*[SUMMARY] * 20)
    system = SystemMessage(content=blocks)  # type: ignore[arg-type]
    create_agent(model, system_prompt=system, middleware=[summarising(writer)]).invoke(
        {"messages": [*conversation(20), HumanMessage("Weather?")]}
    )
    [received] = model.received
    assert received[0].content[0] == blocks[0]  # the cached prefix is untouched
    assert received[0].content[-1]["text"].endswith(SUMMARY)  # type: ignore[index]
    assert tokens(received) <= 800


def test_a_failing_summariser_degrades_to_trimming() -> None:
    class Broken(RecordingChatModel):
        def _generate(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("summariser down")

    history = [*conversation(20), HumanMessage("Weather?")]
    model = replies("still here")
    out = agent_with(model, summarising(Broken(messages=iter([])))).invoke({"messages": history})
    assert out["messages"][-1].content == "still here"
    assert tokens(model.received[0], [WEATHER_TOOL]) <= 800
    assert "tokenbudget_summary" not in out


def test_the_agent_model_summarises_when_no_summariser_is_given() -> None:
    class SelfSummarising(RecordingChatModel):
        def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
            reply = SUMMARY if "running summary" in str(messages[0].content) else "the answer"
            self.messages = iter([reply])
            return super()._generate(messages, *args, **kwargs)

    history = [*conversation(20), HumanMessage("Weather?")]
    model = SelfSummarising(messages=iter([]))
    middleware = ContextWindowMiddleware("gpt-4o", max_tokens=800, strategy="summarise")
    out = create_agent(model, middleware=[middleware]).invoke({"messages": history})
    assert out["tokenbudget_summary"] == SUMMARY
    assert out["messages"][-1].content == "the answer"
    assert len(model.received) > 1
    assert model.received[-1][0].content.endswith(SUMMARY)


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": "big"}, "max_tokens"),
        ({"max_tokens": 100, "reserve_output": -1}, "reserve_output"),
        ({"max_tokens": 100, "strategy": "forget"}, "strategy"),
        ({"max_tokens": 100, "on_overflow": "drop"}, "on_overflow"),
        ({"max_tokens": 100, "strategy": "summarise", "on_overflow": "truncate"}, "on_overflow"),
        ({"max_tokens": 100, "strategy": "summarise", "summariser": "gpt-4o"}, "summariser"),
        ({"max_tokens": 100, "strategy": "summarise", "summary_tokens": 500}, "summary_tokens"),
        ({"max_tokens": 100, "pin_first_user": "yes"}, "pin_first_user"),
    ],
)
def test_bad_options_fail_at_construction(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        ContextWindowMiddleware("gpt-4o", **kwargs)
    assert info.value.field == field
    assert isinstance(info.value, TokenBudgetError)


def test_unknown_model_and_counter_objects() -> None:
    with pytest.raises(UnknownModelError, match="gpt-4o"):
        ContextWindowMiddleware("gpt-4oo", max_tokens=100)
    middleware = ContextWindowMiddleware(TokenCounter.for_model("gpt-4o-mini"), max_tokens=BUDGET)
    model = replies("ok")
    create_agent(model, middleware=[middleware]).invoke({"messages": conversation(20)})
    assert tokens(model.received[0]) <= BUDGET


PDF_TWO_PAGES = (
    b"%PDF-1.4\n1 0 obj <</Type /Pages /Count 2>>\n2 0 obj <</Type /Page>>\n3 0 obj <</Type /Page>>\n"
)


@pytest.mark.parametrize("strategy", ["trim", "summarise"])
def test_a_pdf_is_counted_by_its_estimate_kept_whole_and_never_cut(strategy: str) -> None:
    pdf = {"type": "file", "base64": base64.b64encode(PDF_TWO_PAGES).decode(), "mime_type": "application/pdf"}
    question = HumanMessage(content=[{"type": "text", "text": "Summarise this PDF."}, pdf])
    turns = [
        AIMessage(f"turn {i} " * 150) if i % 2 else HumanMessage(f"turn {i} " * 150) for i in range(1, 8)
    ]
    chat = [HumanMessage("hi"), *turns, question]  # about 300 tokens a turn, then two PDF pages
    model, writer = replies("A PDF about budgets."), replies("Earlier: seven long turns.")
    budget = 2 * PDF_PAGE_TOKENS + (250 if strategy == "trim" else 3_000)  # the turns cannot all stay
    summarising = {"summariser": writer} if strategy == "summarise" else {}
    middleware = ContextWindowMiddleware("gpt-4o", max_tokens=budget, strategy=strategy, **summarising)
    agent = create_agent(model, middleware=[middleware])
    out = agent.invoke({"messages": chat})
    assert out["messages"][-1].content == "A PDF about budgets."
    sent = model.received[-1]
    assert sent[-1] is question or sent[-1].content == question.content  # the PDF block, as sent
    assert all(m.content != turns[0].content for m in sent)  # the oldest turn made room for it
    small = create_agent(replies("never"), middleware=[ContextWindowMiddleware("gpt-4o", max_tokens=BUDGET)])
    with pytest.raises(ContextOverflowError):  # two PDF pages cannot fit 600 tokens
        small.invoke({"messages": [question]})


def test_a_message_that_is_not_a_message_is_named() -> None:
    with pytest.raises(InvalidInputError, match=r"messages\[0\]"):
        to_core_request(["not a message"])  # type: ignore[list-item]


def test_state_key_names_are_stable() -> None:
    from langchain_tokenbudget.context_middleware import ContextWindowState

    assert {"tokenbudget_summary", "tokenbudget_folded", "tokenbudget_folded_id"} <= set(
        ContextWindowState.__annotations__
    )


class FactWriter(RecordingChatModel):
    """A summariser whose summary lists the questions and replies it was given."""

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        words = [w for w in str(messages[-1].content).split() if w.startswith(("q", "reply"))]
        self.messages = iter([AIMessage(" ".join(words))])
        return super()._generate(messages, *args, **kwargs)


def threaded_agent() -> tuple[Any, RecordingChatModel, FactWriter, dict[str, Any]]:
    model = RecordingChatModel(messages=(AIMessage(f"reply{i} " + "blah " * 30) for i in itertools.count()))
    writer = FactWriter(messages=iter([]))
    middleware = ContextWindowMiddleware("gpt-4o", max_tokens=400, strategy="summarise", summariser=writer)
    graph = create_agent(model, system_prompt="sys", checkpointer=InMemorySaver(), middleware=[middleware])
    config = {"configurable": {"thread_id": "t"}}
    for i in range(7):
        graph.invoke({"messages": [HumanMessage(f"q{i} " + "x " * 30)]}, config)
    return graph, model, writer, config


def test_messages_removed_from_the_state_do_not_make_the_summary_skip_any() -> None:
    """Removing already-summarised messages shifts every position: the summary follows the last
    message it covers, so the next one is still folded, not skipped."""
    graph, model, writer, config = threaded_agent()
    values = graph.get_state(config).values
    folded = values["tokenbudget_folded"]
    graph.update_state(config, {"messages": [RemoveMessage(id=m.id) for m in values["messages"][:4]]})
    graph.invoke({"messages": [HumanMessage("q7 " + "x " * 30)]}, config)
    summarised = " ".join(str(m[-1].content) for m in writer.received)
    sent = {str(m.content).split()[0] for m in model.received[-1]}
    for message in values["messages"][: folded + 2]:  # what was folded, and the turn after it
        first = str(message.content).split()[0]
        assert first in summarised or first in sent, first


def test_a_reset_thread_drops_the_old_summary() -> None:
    graph, model, _, config = threaded_agent()
    assert graph.get_state(config).values["tokenbudget_summary"]
    graph.update_state(config, {"messages": [RemoveMessage(id=REMOVE_ALL_MESSAGES)]})
    out = graph.invoke({"messages": [HumanMessage("I am Bob, a new conversation")]}, config)
    assert [str(m.content) for m in model.received[-1]] == ["sys", "I am Bob, a new conversation"]
    assert out.get("tokenbudget_summary") is None


# -- summary calls and budgets ------------------------------------------------------------------


class MeteredSelfSummarising(RecordingChatModel):
    """The agent's own model: it writes summaries when asked, answers otherwise; every reply
    reports 500 input and 50 output tokens."""

    model_name: str = "gpt-4o-mini"

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        text = SUMMARY if "running summary" in str(messages[0].content) else "the answer"
        usage = {"input_tokens": 500, "output_tokens": 50, "total_tokens": 550}
        self.messages = iter([AIMessage(text, usage_metadata=usage)])
        return super()._generate(messages, *args, **kwargs)


def summarising_agent(model: RecordingChatModel, budget: Any) -> Any:
    context = ContextWindowMiddleware("gpt-4o-mini", max_tokens=800, strategy="summarise")
    return create_agent(model, middleware=[context, budget])


@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
def test_summary_calls_go_through_the_budget_middleware_as_overhead(how: str) -> None:
    """The summaries the middleware asks the agent's model for are reserved and charged by a
    BudgetMiddleware inside it, to the run's payer, reported as overhead."""
    ledger = Ledger("memory://")
    model = MeteredSelfSummarising(messages=iter([]))
    graph = summarising_agent(model, BudgetMiddleware(ledger, user="ana", feature="chat"))
    payload = {"messages": [*conversation(20), HumanMessage("Weather?")]}
    out = graph.invoke(payload) if how == "invoke" else asyncio.run(graph.ainvoke(payload))
    assert out["tokenbudget_summary"] == SUMMARY
    summaries = len(model.received) - 1
    assert summaries >= 1
    report = build_report(ledger, last_days=1)
    assert report.totals.requests == len(model.received)  # every call the model got was charged
    one_call = cost_of(Usage(input_tokens=500, output_tokens=50), "gpt-4o-mini")
    assert report.totals.overhead_usd == summaries * one_call
    assert [r.key for r in report.breakdown("user").rows] == ["ana"]


def test_a_refused_budget_stops_the_summary_calls_too() -> None:
    ledger = Ledger("memory://", policy=BudgetPolicy(user_daily_tokens=1))
    model = MeteredSelfSummarising(messages=iter([]))
    graph = summarising_agent(model, BudgetMiddleware(ledger, user="ana", on_exceeded="end"))
    out = graph.invoke({"messages": [*conversation(20), HumanMessage("Weather?")]})
    assert "tokenbudget_refusal" in out["messages"][-1].response_metadata
    assert model.received == []  # neither a summary nor the answer went out
    assert "tokenbudget_summary" not in out


def test_the_run_token_cap_counts_the_summary_calls() -> None:
    """A summary and the answer at 550 tokens each: a run cap that holds the answer alone but not
    the summary before it ends the run before the answer goes out."""
    ledger = Ledger("memory://")
    model = MeteredSelfSummarising(messages=iter([]))
    graph = summarising_agent(model, BudgetMiddleware(ledger, max_output_tokens=50, max_run_tokens=1_200))
    with pytest.raises(BudgetExceededError) as refused:
        graph.invoke({"messages": [*conversation(20), HumanMessage("Weather?")]})
    assert refused.value.budget == "max_run_tokens"
    assert refused.value.used == 550 * len(model.received) > 0
    assert build_report(ledger, last_days=1).totals.requests == len(model.received)
