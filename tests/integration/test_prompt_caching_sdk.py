"""Prompt caching end to end: planned breakpoints go out through the official SDKs (and
ChatAnthropic), the provider's cache figures come back and are priced."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import HumanMessage, SystemMessage
from provider_server import AnthropicReply, OpenAIReply, ProviderServer
from pydantic import SecretStr

from tokenbudget_core import (
    Usage,
    aplan_prompt_cache,
    plan_prompt_cache,
    prompt_cache_report,
    with_prompt_cache_key,
)

pytestmark = pytest.mark.integration

CLAUDE = "claude-sonnet-4-6"  # minimum cacheable prefix: 2,048 tokens
MANUAL = "The device resets when the red button is held for ten seconds. " * 200
TOOLS = [
    {
        "name": "lookup",
        "description": "Looks a part up in the catalogue. " * 250,
        "input_schema": {"type": "object", "properties": {"part": {"type": "string"}}},
    }
]


def base_request() -> dict[str, object]:
    return {
        "model": CLAUDE,
        "max_tokens": 256,
        "tools": TOOLS,
        "system": MANUAL,
        "messages": [{"role": "user", "content": "How do I reset it?"}],
    }


def test_breakpoints_reach_the_api_and_the_next_call_reads_the_cache(
    provider_server: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    plan = plan_prompt_cache(base_request(), ttl={"tools": "1h", "system": "1h"})
    assert [b.section for b in plan.breakpoints] == ["tools", "system"]
    written = plan.cached_tokens
    provider_server.queue(
        AnthropicReply(input_tokens=10, ephemeral_1h_input_tokens=written),  # first call writes
        AnthropicReply(input_tokens=10, cache_read_input_tokens=written),  # second call reads
    )
    first = anthropic_client.messages.create(**plan.request)
    second = anthropic_client.messages.create(**plan.request)

    body = provider_server.requests[0].body
    assert body["tools"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert body["system"] == [
        {"type": "text", "text": MANUAL, "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    ]
    assert body["messages"] == [{"role": "user", "content": "How do I reset it?"}]

    write = prompt_cache_report(Usage.from_anthropic(first), CLAUDE)
    assert (write.cache_write_tokens, write.cache_write_1h_tokens, write.cache_read_tokens) == (
        written,
        written,
        0,
    )
    assert write.write_premium is not None
    assert write.write_premium > 0  # 1h writes cost 2x input
    assert write.net_savings == -write.write_premium
    read = prompt_cache_report(Usage.from_anthropic(second), CLAUDE)
    assert read.cache_read_tokens == written
    assert read.read_savings == Decimal(written) * Decimal("2.7") / 1_000_000  # $3 - $0.30 per MTok
    assert read.hit_rate == pytest.approx(written / (written + 10))
    assert write.net_savings is not None
    # a 1h write costs one extra input price ($3), a read saves $2.70: the second re-read pays it back
    assert read.read_savings + write.net_savings < 0 < 2 * read.read_savings + write.net_savings
    assert not provider_server.errors


async def test_async_plan_through_the_async_client(
    provider_server: ProviderServer, async_anthropic_client: anthropic.AsyncAnthropic
) -> None:
    plan = await aplan_prompt_cache(base_request(), conversation=True)
    provider_server.queue(AnthropicReply(input_tokens=5, cache_read_input_tokens=2_000))
    message = await async_anthropic_client.messages.create(**plan.request)
    sent = provider_server.requests[0].body
    assert sent["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert prompt_cache_report(Usage.from_anthropic(message), CLAUDE).cache_read_tokens == 2_000


def test_chat_anthropic_sends_the_planned_system_blocks(provider_server: ProviderServer) -> None:
    plan = plan_prompt_cache(base_request() | {"tools": []})
    options: dict[str, Any] = {"model": CLAUDE, "max_retries": 0}
    model = ChatAnthropic(base_url=provider_server.url, api_key=SecretStr("test"), **options)
    provider_server.queue(AnthropicReply(input_tokens=8, cache_read_input_tokens=1_500, output_tokens=4))
    reply = model.invoke([SystemMessage(content=plan.request["system"]), HumanMessage("How do I reset it?")])
    sent = provider_server.requests[0].body
    assert sent["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert reply.usage_metadata is not None
    report = prompt_cache_report(Usage.from_langchain(reply.usage_metadata), CLAUDE)
    assert report.cache_read_tokens == 1_500
    assert report.read_savings == Decimal("0.00405")


def test_openai_prompt_cache_key_goes_out_and_cached_tokens_come_back(
    provider_server: ProviderServer, openai_client: openai.OpenAI
) -> None:
    request = with_prompt_cache_key(
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, "support-v2", retention="24h"
    )
    provider_server.queue(OpenAIReply(prompt_tokens=2_048, cached_tokens=1_024, completion_tokens=5))
    response = openai_client.chat.completions.create(**request)
    body = provider_server.requests[0].body
    assert (body["prompt_cache_key"], body["prompt_cache_retention"]) == ("support-v2", "24h")
    report = prompt_cache_report(Usage.from_openai(response), "gpt-4o")
    assert report.cache_read_tokens == 1_024
    assert report.write_premium == 0
    assert report.read_savings == Decimal("0.00128")
