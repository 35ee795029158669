"""BudgetMiddleware closes a model call that failed by the ledger's rule: released when nothing came
back, a flagged estimate when the stream broke off after output (the provider bills what it sent).

Real ``create_agent`` runs, streamed (``stream_mode="messages"``, as agent UIs run them), over a
fake chat model whose stream breaks off after a few chunks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.structured_output import ProviderStrategy, StructuredOutputValidationError
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGenerationChunk
from pydantic import BaseModel

from langchain_tokenbudget import BudgetMiddleware
from tokenbudget_core import TokenCounter, Usage, cost_of
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.money import usd_to_nanos
from tokenbudget_core.streams import estimate_output_tokens

MODEL = "gpt-4o-mini"
QUESTION = "What is the weather in Oslo?"


class Dropped(ConnectionError):
    """The connection dropped mid-stream."""


class BreakingModel(GenericFakeChatModel):
    """Streams ``chunks`` (text, or tool-call argument pieces), then the connection drops."""

    model_name: str = MODEL
    chunks: list[Any]

    def _stream(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> Iterator[ChatGenerationChunk]:
        for piece in self.chunks:
            if isinstance(piece, str):
                yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
            else:
                call = {**piece, "index": 0, "type": "tool_call_chunk"}
                yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[call]))
        raise Dropped("peer closed connection without sending complete message body")


def ledger_and_agent(chunks: list[Any]) -> tuple[Ledger, Any]:
    ledger = Ledger("memory://", policy=BudgetPolicy(user_daily_tokens=100_000))
    model = BreakingModel(messages=iter([]), chunks=chunks)
    return ledger, create_agent(model, middleware=[BudgetMiddleware(ledger, user="u")])


def run(agent: Any, how: str) -> None:
    payload = {"messages": [HumanMessage(QUESTION)]}

    async def consume() -> None:
        async for _ in agent.astream(payload, stream_mode="messages"):
            pass

    def call() -> None:
        if how == "stream":
            list(agent.stream(payload, stream_mode="messages"))
        else:
            asyncio.run(consume())

    with pytest.raises(Dropped):
        call()


def charged(ledger: Ledger) -> dict[str, int]:
    rows = [r.values for r in ledger.store.rollup([ledger.day()])]
    return {k: sum(r.get(k, 0) for r in rows) for k in {k for r in rows for k in r}}


def held_share(ledger: Ledger) -> float:
    """The share of the user's daily tokens spent or reserved: 0 when nothing is held."""
    return ledger.state(user="u").shares["user_daily_tokens (all features)"]


@pytest.mark.parametrize("how", ["stream", "astream"])
@pytest.mark.parametrize(
    ("chunks", "streamed"),
    [
        (["The weather ", "in Oslo ", "is mild"], "The weather in Oslo is mild"),
        ([{"name": "get_weather", "args": '{"city": '}, {"args": '"Oslo"'}], '{"city": "Oslo"'),
    ],
    ids=["text", "tool-call"],
)
def test_a_stream_broken_off_after_output_is_charged_a_flagged_estimate(
    chunks: list[Any], streamed: str, how: str
) -> None:
    ledger, agent = ledger_and_agent(chunks)
    run(agent, how)
    counter = TokenCounter.for_model(MODEL)
    counted = int(counter.count_messages([{"role": "user", "content": QUESTION}]))
    out = estimate_output_tokens(streamed, counter=counter)
    totals = charged(ledger)
    assert (totals["requests"], totals["input_tokens"], totals["output_tokens"]) == (1, counted, out)
    assert out > 0
    assert totals["estimated"] == 1
    assert totals["cost_nanos"] == usd_to_nanos(
        cost_of(Usage(input_tokens=counted, output_tokens=out), MODEL)
    )
    assert held_share(ledger) == (counted + out) / 100_000  # the charge, nothing still reserved


@pytest.mark.parametrize("how", ["stream", "astream"])
def test_a_call_that_failed_before_any_output_is_released(how: str) -> None:
    ledger, agent = ledger_and_agent([])
    run(agent, how)
    assert charged(ledger) == {}
    assert held_share(ledger) == 0.0


class ToolBindingModel(GenericFakeChatModel):
    """Binds tools and the response format as a provider chat model does."""

    model_name: str = MODEL

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self.bind(**kwargs)


@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
def test_a_finished_call_the_agent_fails_afterwards_is_charged_its_reported_usage(how: str) -> None:
    class Answer(BaseModel):
        city: str

    ledger = Ledger("memory://", policy=BudgetPolicy(user_daily_tokens=100_000))
    usage = {"input_tokens": 5000, "output_tokens": 800, "total_tokens": 5800}
    model = ToolBindingModel(messages=iter([AIMessage("not json at all", usage_metadata=usage)]))
    agent = create_agent(
        model, response_format=ProviderStrategy(Answer), middleware=[BudgetMiddleware(ledger, user="u")]
    )
    payload = {"messages": [HumanMessage(QUESTION)]}
    with pytest.raises(StructuredOutputValidationError):
        agent.invoke(payload) if how == "invoke" else asyncio.run(agent.ainvoke(payload))
    totals = charged(ledger)
    assert (totals["requests"], totals["input_tokens"], totals["output_tokens"]) == (1, 5000, 800)
    assert totals.get("estimated", 0) == 0
    assert held_share(ledger) == 5800 / 100_000
