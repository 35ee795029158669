"""BudgetMiddleware's per-run caps across retries and human-in-the-loop resumes, and its refusal text.

Real ``create_agent`` runs over framework fake chat models; the figures are checked against what
the ledger recorded.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import HumanInTheLoopMiddleware, ModelRetryMiddleware
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGenerationChunk
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from lc_fakes import get_weather
from test_lc_budget_callback import make_ledger, metered, reply
from test_lc_budget_middleware import agent, run, tool_turn

from langchain_tokenbudget import BudgetMiddleware
from tokenbudget_core import InvalidInputError
from tokenbudget_core.ledger import Ledger


@pytest.mark.parametrize("result", [None, 42])
def test_a_refusal_function_returning_no_string_is_named(tmp_path: Path, result: Any) -> None:
    ledger = make_ledger(tmp_path, user_daily_tokens=10)
    budget = BudgetMiddleware(
        ledger, model="gpt-4o", user="u", on_exceeded="end", refusal_message=lambda e: result
    )
    with pytest.raises(InvalidInputError) as caught:
        run(agent(tool_turn(), budget), "invoke")
    assert caught.value.field == "refusal_message"
    assert "not a string" in str(caught.value)


class Dropped(ConnectionError):
    """The connection dropped mid-stream."""


class FlakyModel(GenericFakeChatModel):
    """Its first ``breaks`` calls stream 100 words and then the connection drops; the next answers
    (50 tokens in, 10 out)."""

    model_name: str = "gpt-4o"
    breaks: int
    attempts: int = 0

    def _stream(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> Iterator[ChatGenerationChunk]:
        self.attempts += 1
        if self.attempts <= self.breaks:
            for _ in range(100):
                yield ChatGenerationChunk(message=AIMessageChunk(content="word "))
            raise Dropped("connection reset by peer")
        usage = UsageMetadata(input_tokens=50, output_tokens=10, total_tokens=60)
        yield ChatGenerationChunk(message=AIMessageChunk(content="Sunny.", usage_metadata=usage))


def retried_run(how: str, model: FlakyModel, budget: BudgetMiddleware) -> dict[str, Any]:
    """Stream a run (as agent UIs do) with retries outside the budget; its final state."""
    retry = ModelRetryMiddleware(max_retries=5, initial_delay=0, jitter=False, retry_on=(Dropped,))
    graph = create_agent(model, middleware=[retry, budget])
    payload = {"messages": [HumanMessage("Weather in Oslo?")]}
    modes = ["messages", "values"]
    if how == "stream":
        return [c for m, c in graph.stream(payload, stream_mode=modes) if m == "values"][-1]

    async def astream() -> dict[str, Any]:
        return [c async for m, c in graph.astream(payload, stream_mode=modes) if m == "values"][-1]

    return asyncio.run(astream())


def ledger_tokens(ledger: Ledger) -> int:
    return sum(
        r.values.get("input_tokens", 0) + r.values.get("output_tokens", 0)
        for r in ledger.store.rollup([ledger.day()])
    )


@pytest.mark.parametrize("how", ["stream", "astream"])
def test_the_run_cap_counts_retried_calls_that_broke_off_after_output(how: str) -> None:
    ledger = Ledger("memory://")
    budget = BudgetMiddleware(
        ledger, model="gpt-4o", user="u", max_output_tokens=150, max_run_tokens=400, on_exceeded="end"
    )
    model = FlakyModel(messages=iter([]), breaks=4)
    state = retried_run(how, model, budget)
    # The broken-off streams are charged their estimates (about 112 tokens each); once what is
    # left of the cap cannot hold the next attempt's worst case, it is refused before it goes out.
    assert model.attempts < 4
    assert state["messages"][-1].response_metadata["tokenbudget_refusal"]["budget"] == "max_run_tokens"
    assert ledger_tokens(ledger) <= 400
    assert state["tokenbudget_run_tokens"] == ledger_tokens(ledger)


@pytest.mark.parametrize("how", ["stream", "astream"])
def test_a_retry_that_answers_carries_the_failed_attempts_charge_once(how: str) -> None:
    ledger = Ledger("memory://")
    budget = BudgetMiddleware(ledger, model="gpt-4o", user="u", max_output_tokens=150, max_run_tokens=10_000)
    model = FlakyModel(messages=iter([]), breaks=1)
    state = retried_run(how, model, budget)
    assert state["messages"][-1].content == "Sunny."
    records = list(ledger.store.rollup([ledger.day()]))
    assert sum(r.values["requests"] for r in records) == 2
    assert sum(r.values.get("estimated", 0) for r in records) == 1
    assert state["tokenbudget_run_tokens"] == ledger_tokens(ledger) > 60
    costs = [r.values.get("cost_nanos", 0) for r in records]
    assert state["tokenbudget_run_nanos"] == sum(costs) > 0


def approve_every_tool_call(how: str, graph: Any, config: dict[str, Any]) -> list[BaseMessage]:
    """Ask once, then resume the run after each approval request until it ends; its messages."""

    async def arun() -> dict[str, Any]:
        out = await graph.ainvoke({"messages": [HumanMessage("Weather in Oslo?")]}, config)
        while "__interrupt__" in out:
            out = await graph.ainvoke(Command(resume={"decisions": [{"type": "approve"}]}), config)
        return out

    def run_sync() -> dict[str, Any]:
        out = graph.invoke({"messages": [HumanMessage("Weather in Oslo?")]}, config)
        while "__interrupt__" in out:
            out = graph.invoke(Command(resume={"decisions": [{"type": "approve"}]}), config)
        return out

    return list((run_sync() if how == "invoke" else asyncio.run(arun()))["messages"])


@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
def test_the_run_cap_holds_across_human_in_the_loop_resumes(how: str) -> None:
    ledger = Ledger("memory://")
    budget = BudgetMiddleware(
        ledger, model="gpt-4o", user="u", max_output_tokens=50, max_run_tokens=400, on_exceeded="end"
    )
    lookups = [
        reply(
            "", inp=100, out=10, tool_calls=[{"name": "get_weather", "args": {"city": "Oslo"}, "id": f"c{k}"}]
        )
        for k in range(10)
    ]
    model = metered(*lookups)
    approval = HumanInTheLoopMiddleware(interrupt_on={"get_weather": True})
    graph = create_agent(
        model, tools=[get_weather], middleware=[approval, budget], checkpointer=InMemorySaver()
    )
    config = {"configurable": {"thread_id": "t-1"}}
    messages = approve_every_tool_call(how, graph, config)
    # Each call is charged 110 tokens: the 4th call's worst case no longer fits in the cap, although
    # the run was paused for approval (and resumed) after every call.
    assert messages[-1].response_metadata["tokenbudget_refusal"]["budget"] == "max_run_tokens"
    assert messages[-1].response_metadata["tokenbudget_refusal"]["used"] == "330"
    assert ledger_tokens(ledger) == 330
    # A new question on the thread is a new run: it starts from zero (its cap counts only its own
    # calls; the longer history makes each call's worst case bigger, so fewer of them fit).
    again = approve_every_tool_call(how, graph, config)
    assert ledger_tokens(ledger) > 330
    assert again[-1].response_metadata["tokenbudget_refusal"]["used"] == str(ledger_tokens(ledger) - 330)


class FloodedFlakyModel(FlakyModel):
    """A :class:`FlakyModel` whose second broken attempt lasts while ``flood`` other agent runs
    take their model steps on the same middleware (a busy server)."""

    flood: Any = None

    def _stream(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> Iterator[ChatGenerationChunk]:
        for n, chunk in enumerate(super()._stream(messages, *args, **kwargs)):
            if n == 99 and self.attempts == 2 and self.flood is not None:
                self.flood()
            yield chunk


def test_a_step_under_way_keeps_its_charges_while_many_other_steps_come_and_go() -> None:
    ledger = Ledger("memory://")
    budget = BudgetMiddleware(
        ledger, model="gpt-4o", user="u", max_output_tokens=150, max_run_tokens=400, on_exceeded="end"
    )
    budget._steps.size = 8  # a small record, so a few other steps fill it (4,096 by default)
    quick = GenericFakeChatModel(
        messages=itertools.repeat(
            AIMessage("Hi.", usage_metadata=UsageMetadata(input_tokens=5, output_tokens=1, total_tokens=6))
        )
    )
    others = create_agent(quick, middleware=[budget])
    flood = 30
    flooded = []

    def run_others() -> None:
        before = ledger_tokens(ledger)
        for _ in range(flood):
            others.invoke({"messages": [HumanMessage("hi")]})
        flooded.append(ledger_tokens(ledger) - before)

    model = FloodedFlakyModel(messages=iter([]), breaks=4, flood=run_others)
    state = retried_run("stream", model, budget)
    assert model.attempts < 4  # the cap counted the broken attempts made before the flood
    assert state["messages"][-1].response_metadata["tokenbudget_refusal"]["budget"] == "max_run_tokens"
    this_run = ledger_tokens(ledger) - sum(flooded)
    assert this_run <= 400
    assert state["tokenbudget_run_tokens"] == this_run
