"""The call's top-level ``cache_control`` option (``ChatAnthropic(...).bind(cache_control=...)``,
or ``AnthropicPromptCachingMiddleware``'s model setting) marks the prompt-cache TTL as much as a
marker in a content block does: a streamed Claude reply's unsplit cache writes are charged at the
1h rate Anthropic bills, and the worst case reserved includes the cache-write premium (review s21
handler, finding 4). Real ``ChatAnthropic`` over sockets to the loopback provider server."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_anthropic import ChatAnthropic
from langchain_anthropic.middleware import AnthropicPromptCachingMiddleware
from langchain_core.messages import HumanMessage
from provider_server import AnthropicReply, ProviderServer
from pydantic import SecretStr

from langchain_tokenbudget import BudgetCallbackHandler, BudgetMiddleware
from tokenbudget_core import Usage, cost_of
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.errors import BudgetExceededError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.money import usd_to_nanos

pytestmark = pytest.mark.integration

CLAUDE = "claude-haiku-4-5"
ONE_HOUR = {"type": "ephemeral", "ttl": "1h"}
BILLED = Usage(input_tokens=10_020, output_tokens=7, cache_write_tokens=10_000, cache_write_1h_tokens=10_000)
_timeouts = itertools.count(1)


def claude(server: ProviderServer) -> ChatAnthropic:
    return ChatAnthropic(
        base_url=server.url,
        api_key=SecretStr("test"),
        model=CLAUDE,
        max_retries=0,
        max_tokens=200,
        default_request_timeout=120 + next(_timeouts) / 1000,
    )


def charged(ledger: Ledger) -> dict[str, int]:
    rows = [r.values for r in ledger.store.rollup([ledger.day()])]
    return {k: sum(r.get(k, 0) for r in rows) for k in {k for r in rows for k in r}}


def test_a_stream_bound_to_the_1h_option_is_charged_1h_writes(
    tmp_path: Path, provider_server: ProviderServer
) -> None:
    ledger = Ledger("memory://", spool_path=tmp_path / "spool.jsonl")
    provider_server.queue(AnthropicReply(input_tokens=20, ephemeral_1h_input_tokens=10_000, output_tokens=7))
    model = claude(provider_server).bind(cache_control=ONE_HOUR)
    list(model.stream("hi", config={"callbacks": [BudgetCallbackHandler(ledger)]}))
    assert provider_server.requests[-1].body.get("cache_control") == ONE_HOUR
    totals = charged(ledger)
    assert (totals["cache_write_tokens"], totals["estimated"]) == (10_000, 0)
    assert totals["cost_nanos"] == usd_to_nanos(cost_of(BILLED, CLAUDE))


def test_the_worst_case_of_a_call_with_the_1h_option_includes_the_cache_write(
    tmp_path: Path, provider_server: ProviderServer
) -> None:
    """A long prompt whose plain worst case fits the budget, but not with its 1h cache write
    (input at 2x): refused, nothing sent."""
    prompt = "word " * 20_000
    plain = cost_of(Usage(input_tokens=20_000, output_tokens=200), CLAUDE)
    limit = plain * 3 / 2  # the 1h write doubles the input's price: ~1.9x the plain worst case
    ledger = Ledger(
        "memory://", spool_path=tmp_path / "spool.jsonl", policy=BudgetPolicy(daily_usd=str(limit))
    )
    model = claude(provider_server).bind(cache_control=ONE_HOUR)
    with pytest.raises(BudgetExceededError):
        model.invoke(prompt, config={"callbacks": [BudgetCallbackHandler(ledger)]})
    assert provider_server.requests == []


def test_budget_middleware_reads_the_prompt_caching_middleware_option(
    tmp_path: Path, provider_server: ProviderServer
) -> None:
    """``AnthropicPromptCachingMiddleware(ttl="1h")`` sets the top-level option (no system
    message nor tools to mark here): a streamed reply's writes are charged at 1h."""
    ledger = Ledger("memory://", spool_path=tmp_path / "spool.jsonl")
    provider_server.queue(AnthropicReply(input_tokens=20, ephemeral_1h_input_tokens=10_000, output_tokens=7))
    middleware: list[Any] = [AnthropicPromptCachingMiddleware(ttl="1h"), BudgetMiddleware(ledger)]
    agent = create_agent(claude(provider_server), middleware=middleware)
    list(agent.stream({"messages": [HumanMessage("hi")]}, stream_mode="messages"))
    assert provider_server.requests[-1].body.get("cache_control") == ONE_HOUR
    totals = charged(ledger)
    assert (totals["cache_write_tokens"], totals["estimated"]) == (10_000, 0)
    assert totals["cost_nanos"] == usd_to_nanos(cost_of(BILLED, CLAUDE))
