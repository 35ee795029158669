"""BudgetMiddleware charging streamed Claude calls of a ``create_agent`` agent, with the real
``ChatAnthropic`` over sockets to the loopback provider server: a stream that breaks off after
output was sent (the provider bills it) and prompt-cache writes with a 1-hour TTL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import pytest
from langchain.agents import create_agent
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import AIMessageChunk, HumanMessage
from provider_server import AnthropicReply, ErrorReply, ProviderServer
from pydantic import SecretStr

from langchain_tokenbudget import BudgetMiddleware
from tokenbudget_core import TokenCounter, Usage, cost_of
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.money import usd_to_nanos
from tokenbudget_core.streams import estimate_output_tokens

pytestmark = pytest.mark.integration

CLAUDE = "claude-haiku-4-5"
QUESTION = "What is the weather in Oslo today?"
TEXT = "The weather in Oslo is mild today with light winds from the west and some sun."


def claude(server: ProviderServer, **kwargs: Any) -> ChatAnthropic:
    return ChatAnthropic(
        base_url=server.url, api_key=SecretStr("test"), model=CLAUDE, max_retries=0, max_tokens=200, **kwargs
    )


def charged(ledger: Ledger) -> dict[str, int]:
    """Today's attribution counters, summed over every row."""
    rows = [r.values for r in ledger.store.rollup([ledger.day()])]
    return {k: sum(r.get(k, 0) for r in rows) for k in {k for r in rows for k in r}}


BROKE_OFF = "incomplete chunked read|peer closed connection"


def agent_and_counter(
    ledger: Ledger, server: ProviderServer, client: anthropic.Anthropic, **clients: Any
) -> tuple[Any, TokenCounter]:
    """An agent on Claude whose next reply breaks off after 8 text deltas, and its exact counter."""
    counter = TokenCounter.for_model(CLAUDE, anthropic_client=client, **clients)
    agent = create_agent(claude(server), middleware=[BudgetMiddleware(ledger, counter=counter)])
    server.queue(AnthropicReply(text=TEXT, input_tokens=400, output_tokens=30, cut_short_after=8))
    return agent, counter


def check_estimate(ledger: Ledger, counter: TokenCounter, chunks: list[Any]) -> None:
    """Charged the ledger's estimate of a call cut short: the counted input plus the text it
    streamed before breaking off, flagged."""
    text = "".join(str(c.text) for c in chunks if isinstance(c, AIMessageChunk))
    assert text
    assert TEXT.startswith(text)
    assert text != TEXT
    counted = int(counter.count_messages([{"role": "user", "content": QUESTION}]))
    out = estimate_output_tokens(text, counter=counter)
    totals = charged(ledger)
    assert (totals["requests"], totals["input_tokens"], totals["output_tokens"]) == (1, counted, out)
    assert totals["estimated"] == 1
    expected = cost_of(Usage(input_tokens=counted, output_tokens=out), CLAUDE)
    assert totals["cost_nanos"] == usd_to_nanos(expected)


def test_a_stream_that_breaks_off_after_output_is_charged_a_flagged_estimate(
    tmp_path: Path, provider_server: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    """The provider processed the request and bills what it streamed: not a released call."""
    ledger = Ledger("memory://", spool_path=tmp_path / "spool.jsonl")
    agent, counter = agent_and_counter(ledger, provider_server, anthropic_client)
    chunks: list[Any] = []

    def consume() -> None:
        for c, _ in agent.stream({"messages": [HumanMessage(QUESTION)]}, stream_mode="messages"):
            chunks.append(c)

    with pytest.raises(Exception, match=BROKE_OFF):
        consume()
    check_estimate(ledger, counter, chunks)


async def test_an_async_stream_that_breaks_off_after_output_is_charged_a_flagged_estimate(
    tmp_path: Path,
    provider_server: ProviderServer,
    anthropic_client: anthropic.Anthropic,
    async_anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    ledger = Ledger("memory://", spool_path=tmp_path / "spool.jsonl")
    clients = {"anthropic_async_client": async_anthropic_client}
    agent, counter = agent_and_counter(ledger, provider_server, anthropic_client, **clients)
    chunks: list[Any] = []

    async def consume() -> None:
        async for c, _ in agent.astream({"messages": [HumanMessage(QUESTION)]}, stream_mode="messages"):
            chunks.append(c)

    with pytest.raises(Exception, match=BROKE_OFF):
        await consume()
    check_estimate(ledger, counter, chunks)


@pytest.mark.parametrize("reply", [ErrorReply(status=529), AnthropicReply(text=TEXT, cut_short_after=0)])
def test_a_call_that_fails_before_any_output_is_released(
    tmp_path: Path, provider_server: ProviderServer, reply: ErrorReply | AnthropicReply
) -> None:
    policy = BudgetPolicy(user_daily_tokens=100_000)
    ledger = Ledger("memory://", policy=policy, spool_path=tmp_path / "spool.jsonl")
    agent = create_agent(claude(provider_server), middleware=[BudgetMiddleware(ledger, user="u")])
    provider_server.queue(reply)
    with pytest.raises(Exception):  # the SDK's error for each failure
        list(agent.stream({"messages": [HumanMessage(QUESTION)]}, stream_mode="messages"))
    assert charged(ledger) == {}
    assert ledger.state(user="u").shares == {"user_daily_tokens (all features)": 0.0}  # nothing held
