"""BudgetMiddleware inside real create_agent runs with tools, checked against the ledger's numbers."""

from __future__ import annotations

import asyncio
import doctest
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.structured_output import ToolStrategy
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from lc_fakes import WEATHER_TOOL, get_weather, tokens
from pydantic import BaseModel
from test_lc_budget_callback import (
    MeteredChatModel,
    RecordingLedger,
    make_ledger,
    metered,
    reply,
    rollup,
    summed,
)

import langchain_tokenbudget.budget_middleware as budget_middleware
from langchain_tokenbudget import BudgetMiddleware
from tokenbudget_core import InvalidInputError, ModelRegistry, UnpricedModelError, Usage, cost_of
from tokenbudget_core.attribution import attribute
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.errors import BudgetExceededError, UnknownModelError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.money import usd_to_nanos

QUESTION = "Weather in Oslo?"
ALL_TOKENS = "user_daily_tokens (all features)"
RUNS = ["invoke", "ainvoke", "stream", "astream"]


def tool_turn(model_inp: int = 60, **kwargs: Any) -> MeteredChatModel:
    """The model asks for the weather in Oslo, then answers: two model calls per run."""
    call = reply(
        "", inp=model_inp, out=12, tool_calls=[{"name": "get_weather", "args": {"city": "Oslo"}, "id": "c1"}]
    )
    return metered(call, reply("It is 18C and sunny in Oslo.", inp=model_inp + 30, out=9), **kwargs)


def agent(model: MeteredChatModel, *middleware: BudgetMiddleware, **kwargs: Any) -> Any:
    return create_agent(model, tools=[get_weather], middleware=list(middleware), **kwargs)


def run(graph: Any, how: str, question: str = QUESTION, **kwargs: Any) -> list[BaseMessage]:
    """Run the agent ``how``; the final messages."""
    payload = {"messages": [HumanMessage(question)]}
    if how == "invoke":
        return list(graph.invoke(payload, **kwargs)["messages"])
    if how == "ainvoke":
        return list(asyncio.run(graph.ainvoke(payload, **kwargs))["messages"])
    if how == "stream":
        return list(list(graph.stream(payload, stream_mode="values", **kwargs))[-1]["messages"])

    async def astream() -> list[BaseMessage]:
        return [s async for s in graph.astream(payload, stream_mode="values", **kwargs)][-1]["messages"]

    return list(asyncio.run(astream()))


def reported(messages: list[BaseMessage]) -> Usage:
    """The sum of the usage the model replies of a run reported."""
    found = [
        Usage.from_langchain(m.usage_metadata)
        for m in messages
        if isinstance(m, AIMessage) and m.usage_metadata
    ]
    return sum(found, Usage(requests=0))


@pytest.mark.parametrize("how", RUNS)
def test_an_agent_run_with_tools_charges_every_model_call(tmp_path: Path, how: str) -> None:
    ledger = make_ledger(tmp_path, user_daily_tokens=1_000_000)
    model = tool_turn()
    budget = BudgetMiddleware(ledger, model="gpt-4o", feature="weather", user="u-1", max_output_tokens=200)
    messages = run(agent(model, budget), how)
    assert isinstance(messages[2], ToolMessage)
    assert messages[-1].content == "It is 18C and sunny in Oslo."
    expected = reported(messages)
    totals = summed(ledger)
    assert len(model.calls) == expected.requests == totals["requests"] == 2
    assert (totals["input_tokens"], totals["output_tokens"]) == (
        expected.input_tokens,
        expected.output_tokens,
    )
    assert totals["cost_nanos"] == sum(
        usd_to_nanos(cost_of(Usage.from_langchain(m.usage_metadata), "gpt-4o"))
        for m in messages
        if isinstance(m, AIMessage) and m.usage_metadata
    )
    assert set(rollup(ledger)) == {"weather/u-1/gpt-4o"}
    assert ledger.state(user="u-1").headroom[ALL_TOKENS] == 1_000_000 - expected.total_tokens  # nothing held


@pytest.mark.parametrize("how", RUNS)
def test_a_refusal_raises_before_the_model_runs(tmp_path: Path, how: str) -> None:
    ledger = make_ledger(tmp_path, user_daily_tokens=1_000)
    model = tool_turn()
    with pytest.raises(BudgetExceededError) as refused:
        run(
            agent(model, BudgetMiddleware(ledger, model="gpt-4o", user="u-1")), how
        )  # 16,384 output: too many
    assert refused.value.budget == ALL_TOKENS
    assert model.calls == []
    assert summed(ledger)["requests"] == 0


@pytest.mark.parametrize("how", RUNS)
def test_on_exceeded_end_ends_the_run_with_a_message(tmp_path: Path, how: str) -> None:
    ledger = make_ledger(tmp_path, user_daily_tokens=1_000)
    model = tool_turn()
    budget = BudgetMiddleware(ledger, model="gpt-4o", user="u-1", on_exceeded="end")
    messages = run(agent(model, budget), how)
    assert len(messages) == 2
    refusal = messages[-1]
    assert isinstance(refusal, AIMessage)
    assert refusal.content == f"This request was not sent: it would exceed the {ALL_TOKENS} budget."
    assert refusal.response_metadata["tokenbudget_refusal"]["limit"] == "1000"
    assert refusal.usage_metadata is None
    assert model.calls == []
    assert summed(ledger)["requests"] == 0


class Forecast(BaseModel):
    city: str


def test_on_exceeded_end_ends_a_structured_output_run_too(tmp_path: Path) -> None:
    """Without tools the agent loops back to the model until it has its structured answer: jump to end."""
    ledger = make_ledger(tmp_path, user_daily_tokens=1_000)
    model = metered(reply())
    budget = BudgetMiddleware(ledger, model="gpt-4o", user="u", on_exceeded="end")
    graph = create_agent(model, tools=[], response_format=ToolStrategy(Forecast), middleware=[budget])
    result = graph.invoke({"messages": [HumanMessage(QUESTION)]}, config={"recursion_limit": 10})
    assert "tokenbudget_refusal" in result["messages"][-1].response_metadata
    assert result.get("structured_response") is None
    assert model.calls == []


def test_the_refusal_text_can_be_the_apps(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path, user_daily_tokens=1_000)
    for text, expected in [("Budget reached.", "Budget reached."), (lambda e: f"No: {e.limit}", "No: 1000")]:
        budget = BudgetMiddleware(ledger, model="gpt-4o", user="u", on_exceeded="end", refusal_message=text)
        assert run(agent(tool_turn(), budget), "invoke")[-1].content == expected


def first_call_tokens() -> int:
    """What the middleware counts for the first model call: the question and the weather tool."""
    return tokens([HumanMessage(QUESTION)], [WEATHER_TOOL])


def test_the_run_token_cap_ends_the_run_when_the_next_call_could_break_it(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path)
    # The first call's worst case (input + 100) fits; after it spent 72 tokens, the second's does not.
    cap = first_call_tokens() + 100 + 10
    model = tool_turn()
    budget = BudgetMiddleware(
        ledger, model="gpt-4o", max_output_tokens=100, max_run_tokens=cap, on_exceeded="end"
    )
    checkpointer = InMemorySaver()
    graph = agent(model, budget, checkpointer=checkpointer)
    config = {"configurable": {"thread_id": "t-1"}}
    messages = run(graph, "invoke", config=config)
    assert model.calls == ["generate"]
    assert isinstance(messages[-2], ToolMessage)
    assert messages[-1].response_metadata["tokenbudget_refusal"]["budget"] == "max_run_tokens"
    assert messages[-1].response_metadata["tokenbudget_refusal"]["used"] == "72"
    assert summed(ledger)["requests"] == 1
    # A new run on the same thread starts from zero (a run started by new input resets the run's
    # figures; a resume does not): its first call is refused only because the thread's history
    # has grown past the cap on its own.
    second = run(graph, "invoke", question="And now?", config=config)[-1].response_metadata
    assert second["tokenbudget_refusal"]["used"] == "0"
    assert int(second["tokenbudget_refusal"]["requested"]) > cap
    assert model.calls == ["generate"]


def two_tool_turns() -> MeteredChatModel:
    """Two weather lookups, then the answer: three model calls, charged 72, 102 and 59 tokens."""
    calls = [
        reply("", inp=60 + 30 * k, out=12, tool_calls=[{"name": "get_weather", "args": {"city": c}, "id": c}])
        for k, c in enumerate(["Oslo", "Bergen"])
    ]
    return metered(*calls, reply("Sunny in both.", inp=50, out=9))


def test_the_run_token_cap_adds_up_every_call_of_the_run(tmp_path: Path) -> None:
    recording = RecordingLedger("memory://", spool_path=tmp_path / "spool.jsonl")
    run(agent(two_tool_turns(), BudgetMiddleware(recording, model="gpt-4o", max_output_tokens=100)), "invoke")
    second_input = recording.reservations[1].input_tokens
    cap = 72 + second_input + 100  # the second call fits exactly; the third cannot
    model = two_tool_turns()
    budget = BudgetMiddleware(
        make_ledger(tmp_path), model="gpt-4o", max_output_tokens=100, max_run_tokens=cap
    )
    with pytest.raises(BudgetExceededError) as refused:
        run(agent(model, budget), "invoke")
    assert (refused.value.budget, refused.value.used) == ("max_run_tokens", 72 + 102)
    assert model.calls == ["generate", "generate"]


def test_the_run_dollar_cap_raises_with_the_figures(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path)
    model = tool_turn()
    first_worst = cost_of(Usage(input_tokens=first_call_tokens(), output_tokens=100), "gpt-4o")
    budget = BudgetMiddleware(ledger, model="gpt-4o", max_output_tokens=100, max_run_usd=first_worst)
    with pytest.raises(BudgetExceededError) as refused:
        run(agent(model, budget), "ainvoke")
    assert refused.value.budget == "max_run_usd"
    assert refused.value.used == cost_of(Usage(input_tokens=60, output_tokens=12), "gpt-4o")
    assert model.calls == ["generate"]


def test_a_dollar_cap_on_an_unpriced_model_fails_loudly_and_holds_nothing(tmp_path: Path) -> None:
    registry = ModelRegistry()
    registry.register("in-house-llm", provider="acme", max_output_tokens=100)
    ledger = Ledger(
        "memory://",
        policy=BudgetPolicy(user_daily_tokens=10_000),
        registry=registry,
        spool_path=tmp_path / "s",
    )
    model = tool_turn()
    budget = BudgetMiddleware(ledger, model="in-house-llm", user="u", max_run_usd="1")
    with pytest.raises(UnpricedModelError):
        run(agent(model, budget), "invoke")
    assert model.calls == []
    assert ledger.state(user="u").headroom[ALL_TOKENS] == 10_000


@pytest.mark.parametrize("how", RUNS)
def test_a_failed_model_call_releases_its_reservation(tmp_path: Path, how: str) -> None:
    ledger = make_ledger(tmp_path, user_daily_tokens=1_000_000)
    model = tool_turn(fail=True)
    with pytest.raises(RuntimeError, match="provider down"):
        run(agent(model, BudgetMiddleware(ledger, model="gpt-4o", user="u-1")), how)
    assert len(model.calls) == 1
    assert summed(ledger)["requests"] == 0
    assert ledger.state(user="u-1").headroom[ALL_TOKENS] == 1_000_000


@dataclass
class AppContext:
    user_id: str
    feature: str


def test_the_payer_comes_from_runtime_context_config_or_attribute(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path)
    budget = BudgetMiddleware(ledger, model="gpt-4o", feature="default-f")
    graph = agent(tool_turn(), budget, context_schema=AppContext)
    graph.invoke({"messages": [HumanMessage(QUESTION)]}, context=AppContext(user_id="u-ctx", feature="ctx"))
    graph = agent(tool_turn(), budget)
    graph.invoke({"messages": [HumanMessage(QUESTION)]}, config={"metadata": {"user_id": "u-meta"}})
    with attribute(feature="outer", user="u-outer"):
        agent(tool_turn(), budget).invoke({"messages": [HumanMessage(QUESTION)]})
    rows = rollup(ledger)
    assert set(rows) == {"ctx/u-ctx/gpt-4o", "default-f/u-meta/gpt-4o", "outer/u-outer/gpt-4o"}
    assert all(r["requests"] == 2 for r in rows.values())


def test_a_nested_agent_is_charged_to_its_own_payer_unless_an_attribute_block_names_the_outer(
    tmp_path: Path,
) -> None:
    """As documented: LangChain merges a nested run's config over its parent's, so the agent's
    own metadata names the payer; an ``attribute()`` block around it charges the outer payer."""
    from langchain_core.runnables import RunnableLambda

    ledger = make_ledger(tmp_path)
    budget = BudgetMiddleware(ledger, model="gpt-4o")

    def inner(state: Any) -> Any:
        return agent(tool_turn(), budget).invoke(state, config={"metadata": {"user_id": "inner"}})

    def inner_for_the_outer_payer(state: Any) -> Any:
        with attribute(user="outer"):
            return inner(state)

    outer = {"metadata": {"user_id": "outer"}}
    RunnableLambda(inner).invoke({"messages": [HumanMessage(QUESTION)]}, config=outer)
    RunnableLambda(inner_for_the_outer_payer).invoke({"messages": [HumanMessage(QUESTION)]}, config=outer)
    rows = rollup(ledger)
    assert {key: r["requests"] for key, r in rows.items()} == {"/inner/gpt-4o": 2, "/outer/gpt-4o": 2}


@pytest.mark.parametrize("how", ["stream", "astream"])
def test_claude_running_totals_are_charged_once_through_the_agent(tmp_path: Path, how: str) -> None:
    ledger = make_ledger(tmp_path)
    model = metered(reply("It is sunny.", inp=120, out=30), running_totals=3)
    graph = agent(model, BudgetMiddleware(ledger, model="claude-haiku-4-5", max_output_tokens=100))
    payload = {"messages": [HumanMessage(QUESTION)]}
    if how == "stream":
        chunks = [c for c, _ in graph.stream(payload, stream_mode="messages")]
    else:

        async def collect() -> list[Any]:
            return [c async for c, _ in graph.astream(payload, stream_mode="messages")]

        chunks = asyncio.run(collect())
    assert sum(c.usage_metadata["output_tokens"] for c in chunks if getattr(c, "usage_metadata", None)) == 60
    totals = summed(ledger)
    assert (totals["input_tokens"], totals["output_tokens"], totals["estimated"]) == (120, 30, 0)


def test_a_reply_without_usage_is_estimated_and_flagged(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path)
    model = metered("It is sunny.")
    agent(model, BudgetMiddleware(ledger, model="gpt-4o", max_output_tokens=100)).invoke(
        {"messages": [HumanMessage(QUESTION)]}
    )
    totals = summed(ledger)
    assert (totals["requests"], totals["estimated"]) == (1, 1)
    assert totals["input_tokens"] == first_call_tokens()


def test_options_are_checked_when_made(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path)
    with pytest.raises(InvalidInputError, match="ledger"):
        BudgetMiddleware(object())  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="on_exceeded"):
        BudgetMiddleware(ledger, on_exceeded="stop")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="max_run_usd"):
        BudgetMiddleware(ledger, max_run_usd=0.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="max_run_tokens"):
        BudgetMiddleware(ledger, max_run_tokens=-5)
    with pytest.raises(UnknownModelError):
        BudgetMiddleware(ledger, model="gpt-99")
    assert BudgetMiddleware(ledger, max_run_usd="0.25").max_run_usd == Decimal("0.25")
    model = tool_turn()
    with pytest.raises(InvalidInputError, match="has no name"):
        agent(model, BudgetMiddleware(ledger)).invoke({"messages": [HumanMessage(QUESTION)]})
    assert model.calls == []


def test_docstring_examples_run() -> None:
    result = doctest.testmod(budget_middleware, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
