"""BudgetMiddleware charging streamed Claude calls of a ``create_agent`` agent, with the real
``ChatAnthropic`` over sockets to the loopback provider server: a stream that breaks off after
output was sent (the provider bills it) and prompt-cache writes with a 1-hour TTL.
"""

from __future__ import annotations

import itertools
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


_timeouts = itertools.count(1)


def claude(server: ProviderServer, *, run_async: bool = False) -> ChatAnthropic:
    """Claude on the loopback server. An async test's model gets an HTTP client of its own (a
    timeout no other model has: langchain-anthropic shares one client per base URL and timeout),
    and closes each connection after its reply, so no pooled connection outlives the test's
    event loop (a later async test would be handed it, bound to a closed loop)."""
    options: dict[str, Any] = {}
    if run_async:
        options = {"timeout": 600.0 + next(_timeouts) / 1000, "default_headers": {"Connection": "close"}}
    return ChatAnthropic(
        base_url=server.url, api_key=SecretStr("test"), model=CLAUDE, max_retries=0, max_tokens=200, **options
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
    model = claude(server, run_async=bool(clients))
    agent = create_agent(model, middleware=[BudgetMiddleware(ledger, counter=counter)])
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


def test_a_call_the_provider_refuses_is_released(tmp_path: Path, provider_server: ProviderServer) -> None:
    policy = BudgetPolicy(user_daily_tokens=100_000)
    ledger = Ledger("memory://", policy=policy, spool_path=tmp_path / "spool.jsonl")
    agent = create_agent(claude(provider_server), middleware=[BudgetMiddleware(ledger, user="u")])
    provider_server.queue(ErrorReply(status=529))
    with pytest.raises(anthropic.APIStatusError):
        list(agent.stream({"messages": [HumanMessage(QUESTION)]}, stream_mode="messages"))
    assert charged(ledger) == {}
    assert ledger.state(user="u").shares == {"user_daily_tokens (all features)": 0.0}  # nothing held


def test_a_stream_dropped_before_any_output_is_charged_its_input(
    tmp_path: Path, provider_server: ProviderServer
) -> None:
    """The provider had the request and began answering (``message_start``) when the connection
    dropped: it bills the call, so the ledger charges its flagged estimate, the counted input."""
    policy = BudgetPolicy(user_daily_tokens=100_000)
    ledger = Ledger("memory://", policy=policy, spool_path=tmp_path / "spool.jsonl")
    agent = create_agent(claude(provider_server), middleware=[BudgetMiddleware(ledger, user="u")])
    provider_server.queue(AnthropicReply(text=TEXT, cut_short_after=0))
    with pytest.raises(Exception):  # the SDK's error for a dropped connection
        list(agent.stream({"messages": [HumanMessage(QUESTION)]}, stream_mode="messages"))
    got = charged(ledger)
    assert got["requests"] == got["estimated"] == 1
    assert got["input_tokens"] > 0
    assert got["output_tokens"] == 0


# -- prompt-cache writes of a streamed reply -----------------------------------------------------

DOC = "Our refund policy. " * 2_000


def marked(ttl: str | None) -> HumanMessage:
    """A long document marked for the prompt cache (``ttl`` None: the default 5 minutes), then a question."""
    control = {"type": "ephemeral", **({"ttl": ttl} if ttl else {})}
    return HumanMessage(
        content=[
            {"type": "text", "text": DOC, "cache_control": control},
            {"type": "text", "text": "Can I get a refund?"},
        ]
    )


def billed(reply: AnthropicReply) -> int:
    """What Anthropic bills for ``reply`` (its figures exclude cache writes from the input), in nano-USD."""
    writes = reply.ephemeral_5m_input_tokens + reply.ephemeral_1h_input_tokens
    usage = Usage(
        input_tokens=reply.input_tokens + writes,
        output_tokens=reply.output_tokens,
        cache_write_tokens=writes,
        cache_write_1h_tokens=reply.ephemeral_1h_input_tokens,
    )
    return usd_to_nanos(cost_of(usage, CLAUDE))


def cache_agent(server: ProviderServer, ledger: Ledger, client: anthropic.Anthropic, **clients: Any) -> Any:
    counter = TokenCounter.for_model(CLAUDE, anthropic_client=client, **clients)
    model = claude(server, run_async=bool(clients))
    return create_agent(model, middleware=[BudgetMiddleware(ledger, counter=counter)])


@pytest.mark.parametrize(
    ("ttl", "reply"),
    [
        ("1h", AnthropicReply(input_tokens=20, ephemeral_1h_input_tokens=10_000, output_tokens=7)),
        (None, AnthropicReply(input_tokens=20, ephemeral_5m_input_tokens=10_000, output_tokens=7)),
    ],
    ids=["1h", "5m"],
)
def test_a_streamed_reply_writing_the_prompt_cache_is_charged_at_the_marked_ttl(
    tmp_path: Path,
    provider_server: ProviderServer,
    anthropic_client: anthropic.Anthropic,
    ttl: str | None,
    reply: AnthropicReply,
) -> None:
    """The stream's usage has no 1h/5m split: Anthropic bills the TTL the request marked."""
    ledger = Ledger("memory://", spool_path=tmp_path / "spool.jsonl")
    agent = cache_agent(provider_server, ledger, anthropic_client)
    provider_server.queue(reply)
    list(agent.stream({"messages": [marked(ttl)]}, stream_mode="messages"))
    totals = charged(ledger)
    assert (totals["requests"], totals["cache_write_tokens"], totals["estimated"]) == (1, 10_000, 0)
    assert totals["cost_nanos"] == billed(reply)


async def test_an_async_streamed_reply_writing_the_1h_prompt_cache_is_charged_at_the_1h_rate(
    tmp_path: Path,
    provider_server: ProviderServer,
    anthropic_client: anthropic.Anthropic,
    async_anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    ledger = Ledger("memory://", spool_path=tmp_path / "spool.jsonl")
    agent = cache_agent(
        provider_server, ledger, anthropic_client, anthropic_async_client=async_anthropic_client
    )
    reply = AnthropicReply(input_tokens=20, ephemeral_1h_input_tokens=10_000, output_tokens=7)
    provider_server.queue(reply)
    async for _ in agent.astream({"messages": [marked("1h")]}, stream_mode="messages"):
        pass
    assert charged(ledger)["cost_nanos"] == billed(reply)


def test_a_reply_reporting_the_ttl_split_is_charged_by_it(
    tmp_path: Path, provider_server: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    """Not streamed, the reply reports its split (here both TTLs written): it is charged as reported."""
    ledger = Ledger("memory://", spool_path=tmp_path / "spool.jsonl")
    agent = cache_agent(provider_server, ledger, anthropic_client)
    reply = AnthropicReply(
        input_tokens=20, ephemeral_5m_input_tokens=4_000, ephemeral_1h_input_tokens=6_000, output_tokens=7
    )
    provider_server.queue(reply)
    agent.invoke({"messages": [marked("1h")]})
    totals = charged(ledger)
    assert (totals["cache_write_tokens"], totals["cost_nanos"]) == (10_000, billed(reply))
