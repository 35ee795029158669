"""The budget adapters with the real provider chat models, over sockets to the loopback provider server.

The ledger must charge what the provider bills. For streamed Claude replies that is *not*
what LangChain's aggregated ``usage_metadata`` says: langchain-anthropic attaches each
``message_delta``'s running total to a chunk and adding chunks sums them.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import pytest
from langchain.agents import create_agent
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import AIMessageChunk, HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from provider_server import AnthropicReply, OpenAIReply, ProviderServer
from pydantic import SecretStr

from langchain_tokenbudget import AsyncBudgetCallbackHandler, BudgetCallbackHandler, BudgetMiddleware
from langchain_tokenbudget.messages import to_core_request
from tokenbudget_core import TokenCounter, Usage, cost_of
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.errors import BudgetExceededError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.money import usd_to_nanos

pytestmark = pytest.mark.integration

CLAUDE = "claude-haiku-4-5"
GPT = "gpt-4o-mini"
QUESTION = "What is the weather in Oslo today?"


@tool
def get_weather(city: str) -> str:
    """Look up today's weather for a city."""
    return f"18C and sunny in {city}"


def make_ledger(tmp_path: Path, **policy: Any) -> Ledger:
    return Ledger("memory://", policy=BudgetPolicy(**policy), spool_path=tmp_path / "spool.jsonl")


def charged(ledger: Ledger) -> dict[str, int]:
    """Today's attribution counters, summed over every row."""
    rows = [r.values for r in ledger.store.rollup([ledger.day()])]
    return {k: sum(r.get(k, 0) for r in rows) for k in {k for r in rows for k in r}}


def claude(server: ProviderServer, **kwargs: Any) -> ChatAnthropic:
    return ChatAnthropic(
        base_url=server.url, api_key=SecretStr("test"), model=CLAUDE, max_retries=0, **kwargs
    )


def counter(client: anthropic.Anthropic) -> TokenCounter:
    """Exact Claude counts from the loopback server's count_tokens endpoint (never the real API)."""
    return TokenCounter.for_model(CLAUDE, anthropic_client=client)


def aggregated(chunks: list[AIMessageChunk]) -> dict[str, Any]:
    total = chunks[0]
    for c in chunks[1:]:
        total = total + c
    assert total.usage_metadata is not None
    return dict(total.usage_metadata)


BILLED = AnthropicReply(input_tokens=12, cache_read_input_tokens=100, output_tokens=7, message_deltas=3)
"""What Anthropic bills for this reply: 112 input tokens (100 read from the cache) and 7 output."""


def test_a_streamed_claude_reply_is_charged_what_anthropic_bills(
    tmp_path: Path, provider_server: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    ledger = make_ledger(tmp_path)
    handler = BudgetCallbackHandler(ledger, counter=counter(anthropic_client))
    provider_server.queue(BILLED)
    chunks = list(claude(provider_server).stream(QUESTION, config={"callbacks": [handler]}))
    totals = charged(ledger)
    assert (totals["input_tokens"], totals["cache_read_tokens"], totals["output_tokens"]) == (112, 100, 7)
    assert totals["estimated"] == 0
    billed = Usage(input_tokens=112, cache_read_tokens=100, output_tokens=7)
    assert totals["cost_nanos"] == usd_to_nanos(cost_of(billed, CLAUDE))
    # What LangChain's own aggregate says: every running total added up (2 + 4 + 7, and 3 x 112).
    langchain_says = aggregated(chunks)
    assert (langchain_says["input_tokens"], langchain_says["output_tokens"]) == (336, 13)


async def test_an_async_claude_stream_is_charged_what_anthropic_bills(
    tmp_path: Path, provider_server: ProviderServer, async_anthropic_client: anthropic.AsyncAnthropic
) -> None:
    ledger = make_ledger(tmp_path)
    handler = AsyncBudgetCallbackHandler(
        ledger, counter=TokenCounter.for_model(CLAUDE, anthropic_async_client=async_anthropic_client)
    )
    provider_server.queue(BILLED)
    chunks = [c async for c in claude(provider_server).astream(QUESTION, config={"callbacks": [handler]})]
    totals = charged(ledger)
    assert (totals["input_tokens"], totals["output_tokens"], totals["estimated"]) == (112, 7, 0)
    assert aggregated(chunks)["output_tokens"] == 13


def test_a_streaming_claude_invoke_with_tools_is_charged_what_anthropic_bills(
    tmp_path: Path, provider_server: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    """``streaming=True`` with tools bound: the usage chunks carry list content, not text."""
    ledger = make_ledger(tmp_path)
    handler = BudgetCallbackHandler(ledger, counter=counter(anthropic_client))
    provider_server.queue(BILLED)
    model = claude(provider_server, streaming=True).bind_tools([get_weather])
    message = model.invoke(QUESTION, config={"callbacks": [handler]})
    assert message.usage_metadata is not None
    assert message.usage_metadata["output_tokens"] == 13
    totals = charged(ledger)
    assert (totals["input_tokens"], totals["output_tokens"]) == (112, 7)
    [sent] = [r for r in provider_server.requests if r.path == "/v1/messages"]
    assert sent.body["tools"][0]["name"] == "get_weather"


def test_a_claude_stream_whose_delta_omits_the_input_is_estimated_from_the_count(
    tmp_path: Path, provider_server: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    ledger = make_ledger(tmp_path)
    exact = counter(anthropic_client)
    handler = BudgetCallbackHandler(ledger, counter=exact)
    provider_server.queue(
        AnthropicReply(input_tokens=12, output_tokens=7, message_deltas=2, delta_repeats_input=False)
    )
    list(claude(provider_server).stream(QUESTION, config={"callbacks": [handler]}))
    totals = charged(ledger)
    expected_input = int(exact.count_messages([{"role": "user", "content": QUESTION}]))
    assert (totals["input_tokens"], totals["output_tokens"], totals["estimated"]) == (expected_input, 7, 1)


def test_a_claude_invoke_is_charged_its_reported_usage(
    tmp_path: Path, provider_server: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    ledger = make_ledger(tmp_path)
    handler = BudgetCallbackHandler(ledger, counter=counter(anthropic_client), feature="chat", user="u-1")
    provider_server.queue(AnthropicReply(input_tokens=20, ephemeral_5m_input_tokens=300, output_tokens=11))
    claude(provider_server).invoke(QUESTION, config={"callbacks": [handler]})
    totals = charged(ledger)
    assert (totals["input_tokens"], totals["cache_write_tokens"], totals["output_tokens"]) == (320, 300, 11)
    assert [r.rollup_key for r in ledger.store.rollup([ledger.day()])] == [f"chat/u-1/{CLAUDE}"]


@pytest.mark.parametrize("how", ["invoke", "stream"])
def test_openai_calls_are_charged_the_servers_usage_with_cached_tokens(
    tmp_path: Path, provider_server: ProviderServer, how: str
) -> None:
    ledger = make_ledger(tmp_path)
    url = provider_server.url + "/v1"
    model = ChatOpenAI(base_url=url, api_key=SecretStr("test"), model=GPT, stream_usage=True, max_retries=0)
    provider_server.queue(OpenAIReply(prompt_tokens=1_500, cached_tokens=1_024, completion_tokens=42))
    config = {"callbacks": [BudgetCallbackHandler(ledger)]}
    if how == "invoke":
        model.invoke(QUESTION, config=config)
    else:
        list(model.stream(QUESTION, config=config))
    totals = charged(ledger)
    assert (totals["input_tokens"], totals["cache_read_tokens"], totals["output_tokens"]) == (
        1_500,
        1_024,
        42,
    )
    assert totals["cost_nanos"] == usd_to_nanos(
        cost_of(Usage(input_tokens=1_500, cache_read_tokens=1_024, output_tokens=42), GPT)
    )
    [sent] = provider_server.requests
    assert sent.body["model"] == GPT


def test_a_refused_call_never_reaches_the_provider(
    tmp_path: Path, provider_server: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    ledger = make_ledger(tmp_path, user_daily_usd="0.01")  # Claude's 64,000-token worst case costs more
    handler = BudgetCallbackHandler(ledger, counter=counter(anthropic_client), user="u-1")
    with pytest.raises(BudgetExceededError):
        claude(provider_server).invoke(QUESTION, config={"callbacks": [handler]})
    assert [r.path for r in provider_server.requests] == ["/v1/messages/count_tokens"]
    assert charged(ledger) == {}


def test_an_agent_streaming_claude_is_charged_what_anthropic_bills(
    tmp_path: Path, provider_server: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    ledger = make_ledger(tmp_path)
    budget = BudgetMiddleware(ledger, counter=counter(anthropic_client), max_run_tokens=200_000)
    agent = create_agent(claude(provider_server, max_tokens=1_024), tools=[get_weather], middleware=[budget])
    provider_server.queue(BILLED)
    payload = {"messages": [HumanMessage(QUESTION)]}
    chunks = [c for c, _ in agent.stream(payload, stream_mode="messages") if isinstance(c, AIMessageChunk)]
    assert sum(c.usage_metadata["output_tokens"] for c in chunks if c.usage_metadata) == 13
    totals = charged(ledger)
    assert (totals["requests"], totals["input_tokens"], totals["output_tokens"]) == (1, 112, 7)


def gpt_asking_for(server: ProviderServer, n: int) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=server.url + "/v1", api_key=SecretStr("test"), model=GPT, max_tokens=400, n=n, max_retries=0
    )


@pytest.mark.parametrize("how", ["handler", "middleware"])
def test_a_call_asking_for_several_choices_reserves_the_output_of_each(
    tmp_path: Path, provider_server: ProviderServer, how: str
) -> None:
    """OpenAI bills up to ``max_tokens`` per choice: n=3 x 400 cannot fit a 1,000-token budget,
    though one choice would."""

    def run(n: int, ledger: Ledger) -> None:
        if how == "handler":
            model = gpt_asking_for(provider_server, n)
            model.invoke(QUESTION, config={"callbacks": [BudgetCallbackHandler(ledger, user="u-1")]})
        else:
            agent = create_agent(
                gpt_asking_for(provider_server, n), middleware=[BudgetMiddleware(ledger, user="u-1")]
            )
            agent.invoke({"messages": [HumanMessage(QUESTION)]})

    provider_server.queue(OpenAIReply(prompt_tokens=15, completion_tokens=30))
    run(1, make_ledger(tmp_path, user_daily_tokens=1_000))
    assert len(provider_server.requests) == 1
    ledger = make_ledger(tmp_path, user_daily_tokens=1_000)
    with pytest.raises(BudgetExceededError) as refused:
        run(3, ledger)
    assert refused.value.requested >= 3 * 400
    assert len(provider_server.requests) == 1  # the second call never went out
    assert charged(ledger) == {}


@pytest.mark.parametrize("how", ["handler", "middleware"])
def test_a_call_marked_for_the_prompt_cache_reserves_the_cost_of_writing_it(
    tmp_path: Path, provider_server: ProviderServer, anthropic_client: anthropic.Anthropic, how: str
) -> None:
    """A 1-hour cache write costs twice the input price: a call carrying a ``cache_control``
    marker reserves that worst case, so a budget that holds the plain call refuses the marked one
    before it goes out (it would otherwise commit past the budget)."""
    marked = [
        {"type": "text", "text": "A long, stable instruction block. " * 40},
        {"type": "text", "text": QUESTION, "cache_control": {"type": "ephemeral", "ttl": "1h"}},
    ]
    plain = [{"type": "text", "text": block["text"]} for block in marked]
    counted = counter(anthropic_client)
    tokens = int(counted.count_messages(to_core_request([HumanMessage(plain)])))
    worst_plain = cost_of(Usage(input_tokens=tokens, output_tokens=100), CLAUDE)
    limit = str(worst_plain * Decimal("1.2"))  # holds the plain worst case, not the 2x-input one

    def run(content: list[dict[str, Any]], ledger: Ledger) -> None:
        if how == "handler":
            handler = BudgetCallbackHandler(ledger, counter=counted, user="u-1")
            claude(provider_server, max_tokens=100).invoke(
                [HumanMessage(content)], config={"callbacks": [handler]}
            )
        else:
            budget = BudgetMiddleware(ledger, counter=counted, user="u-1")
            agent = create_agent(claude(provider_server, max_tokens=100), middleware=[budget])
            agent.invoke({"messages": [HumanMessage(content)]})

    provider_server.queue(AnthropicReply(input_tokens=tokens, output_tokens=7))
    run(plain, make_ledger(tmp_path, user_daily_usd=limit))
    sent = len([r for r in provider_server.requests if r.path == "/v1/messages"])
    assert sent == 1
    ledger = make_ledger(tmp_path, user_daily_usd=limit)
    with pytest.raises(BudgetExceededError):
        run(marked, ledger)
    assert len([r for r in provider_server.requests if r.path == "/v1/messages"]) == sent
    assert charged(ledger) == {}
