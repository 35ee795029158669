"""Usage parsing driven by the official openai and anthropic SDKs against the loopback server.

The server reports figures in each provider's own semantics (see ``provider_server``);
these tests state the conversion they expect as arithmetic on those figures, and
price two cases from published rates written out here, not read from the package.
"""

from __future__ import annotations

import math
from decimal import Decimal

import anthropic
import httpx2
import openai
import pytest
from provider_server import AnthropicReply, ErrorReply, OpenAIReply, ProviderServer

from tokenbudget_core.pricing import cost_of
from tokenbudget_core.streams import AnthropicStreamUsage, OpenAIStreamUsage
from tokenbudget_core.usage import Usage

pytestmark = pytest.mark.integration

MTOK = Decimal(1_000_000)
MESSAGES: list[dict[str, str]] = [{"role": "user", "content": "Summarise the attached report."}]
TEXT = "The report says revenue grew four percent while costs stayed flat."
CLAUDE = "claude-haiku-4-5"


class WordCounter:
    def count(self, text: str) -> int:
        return len(text.split())


# --- OpenAI Chat Completions ---------------------------------------------------------------


def test_chat_completion_cached_and_reasoning_tokens(
    provider_server: ProviderServer, openai_client: openai.OpenAI
) -> None:
    provider_server.queue(
        OpenAIReply(
            text=TEXT, prompt_tokens=5000, completion_tokens=900, cached_tokens=3584, reasoning_tokens=640
        )
    )
    response = openai_client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    u = Usage.from_openai(response)
    assert (u.input_tokens, u.cache_read_tokens, u.uncached_input_tokens) == (5000, 3584, 5000 - 3584)
    assert (u.output_tokens, u.reasoning_tokens, u.estimated) == (900, 640, False)
    sent = provider_server.requests[-1]
    assert (sent.path, sent.body["model"], sent.body["messages"]) == (
        "/v1/chat/completions",
        "gpt-4o",
        MESSAGES,
    )
    # gpt-4o: $2.50 / MTok input, $1.25 cached input, $10 output (reasoning billed as output).
    expected = (Decimal(5000 - 3584) * Decimal("2.5") + 3584 * Decimal("1.25") + 900 * Decimal(10)) / MTOK
    assert cost_of(u, "gpt-4o") == expected


def test_chat_stream_with_include_usage_is_exact(
    provider_server: ProviderServer, openai_client: openai.OpenAI
) -> None:
    provider_server.queue(OpenAIReply(text=TEXT, prompt_tokens=812, completion_tokens=15, cached_tokens=512))
    acc = OpenAIStreamUsage()
    stream = openai_client.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(acc.wrap(stream))
    assert chunks[-1].choices == []  # the usage chunk passed through untouched
    assert acc.text == TEXT
    u = acc.result(prompt_tokens_estimate=1, counter=WordCounter())  # both ignored: usage arrived
    assert (u.input_tokens, u.cache_read_tokens, u.output_tokens, u.estimated) == (812, 512, 15, False)
    assert provider_server.requests[-1].body["stream_options"] == {"include_usage": True}


def test_chat_stream_without_usage_is_an_estimate(
    provider_server: ProviderServer, openai_client: openai.OpenAI
) -> None:
    provider_server.queue(OpenAIReply(text=TEXT, prompt_tokens=812, completion_tokens=15))
    acc = OpenAIStreamUsage()
    for _ in acc.wrap(openai_client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)):
        pass
    assert not acc.exact
    rough = acc.result(prompt_tokens_estimate=20)
    assert (rough.input_tokens, rough.output_tokens, rough.estimated) == (20, math.ceil(len(TEXT) / 4), True)
    assert acc.result(prompt_tokens_estimate=20, counter=WordCounter()).output_tokens == len(TEXT.split())


def test_chat_stream_cut_short_is_an_estimate_of_what_arrived(
    provider_server: ProviderServer, openai_client: openai.OpenAI
) -> None:
    provider_server.queue(OpenAIReply(text=TEXT, cut_short_after=3))
    acc = OpenAIStreamUsage()
    stream = openai_client.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    with pytest.raises(openai.APIConnectionError):
        for _ in acc.wrap(stream):
            pass
    first_three = " ".join(TEXT.split()[:3]) + " "
    assert acc.text == first_three
    u = acc.result(prompt_tokens_estimate=20, counter=WordCounter())
    assert (u.input_tokens, u.output_tokens, u.estimated) == (20, 3, True)


async def test_async_chat_stream(
    provider_server: ProviderServer, async_openai_client: openai.AsyncOpenAI
) -> None:
    provider_server.queue(OpenAIReply(text=TEXT, prompt_tokens=70, completion_tokens=13, reasoning_tokens=4))
    acc = OpenAIStreamUsage()
    stream = await async_openai_client.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    async for _ in acc.awrap(stream):
        pass
    u = acc.result()
    assert (u.input_tokens, u.output_tokens, u.reasoning_tokens) == (70, 13, 4)


# --- OpenAI Responses ---------------------------------------------------------------------


def test_responses_api(provider_server: ProviderServer, openai_client: openai.OpenAI) -> None:
    provider_server.queue(
        OpenAIReply(
            text=TEXT, prompt_tokens=3000, completion_tokens=420, cached_tokens=2048, reasoning_tokens=300
        )
    )
    response = openai_client.responses.create(model="gpt-4.1", input="Summarise the attached report.")
    assert response.output_text == TEXT
    u = Usage.from_openai_responses(response)
    assert (u.input_tokens, u.cache_read_tokens, u.uncached_input_tokens) == (3000, 2048, 3000 - 2048)
    assert (u.output_tokens, u.reasoning_tokens) == (420, 300)
    assert provider_server.requests[-1].path == "/v1/responses"


# --- Anthropic ----------------------------------------------------------------------------


def test_anthropic_message_adds_cache_reads_and_writes_to_input(
    provider_server: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    reply = AnthropicReply(
        text=TEXT,
        input_tokens=40,
        output_tokens=350,
        cache_read_input_tokens=6000,
        ephemeral_5m_input_tokens=1000,
        ephemeral_1h_input_tokens=2000,
    )
    provider_server.queue(reply)
    with pytest.warns(DeprecationWarning, match="claude-sonnet-4-5"):  # the SDK warns; the price is known
        message = anthropic_client.messages.create(
            model="claude-sonnet-4-5", max_tokens=512, messages=MESSAGES
        )
    u = Usage.from_anthropic(message)
    assert u.input_tokens == 40 + 6000 + 1000 + 2000
    assert (u.cache_read_tokens, u.cache_write_tokens, u.cache_write_1h_tokens) == (6000, 3000, 2000)
    assert (u.uncached_input_tokens, u.output_tokens) == (40, 350)
    # claude-sonnet-4-5: $3 input, $0.30 cache read, $3.75 5-minute write, $6 1-hour write, $15 output.
    expected = (
        40 * Decimal(3)
        + 6000 * Decimal("0.30")
        + 1000 * Decimal("3.75")
        + 2000 * Decimal(6)
        + 350 * Decimal(15)
    ) / MTOK
    assert cost_of(u, "claude-sonnet-4-5") == expected
    assert provider_server.requests[-1].body["max_tokens"] == 512


@pytest.mark.parametrize("repeats_input", [True, False], ids=["delta-repeats-input", "delta-output-only"])
def test_anthropic_stream_running_totals_are_not_summed(
    provider_server: ProviderServer, anthropic_client: anthropic.Anthropic, repeats_input: bool
) -> None:
    reply = AnthropicReply(
        text=TEXT,
        input_tokens=30,
        output_tokens=90,
        cache_read_input_tokens=1500,
        ephemeral_1h_input_tokens=200,
        start_output_tokens=3,
        message_deltas=3,
        delta_repeats_input=repeats_input,
    )
    provider_server.queue(reply)
    acc = AnthropicStreamUsage()
    stream = anthropic_client.messages.create(model=CLAUDE, max_tokens=256, messages=MESSAGES, stream=True)
    kinds = [event.type for event in acc.wrap(stream)]
    assert kinds.count("message_delta") == 3
    u = acc.result()
    assert (u.output_tokens, u.estimated) == (90, False)  # not 3 + 30 + 60 + 90
    assert (u.input_tokens, u.cache_read_tokens, u.cache_write_1h_tokens) == (30 + 1500 + 200, 1500, 200)
    assert acc.text == TEXT


def test_anthropic_stream_helper_agrees_with_the_sdk_snapshot(
    provider_server: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    provider_server.queue(
        AnthropicReply(text=TEXT, input_tokens=11, output_tokens=42, cache_read_input_tokens=64)
    )
    acc = AnthropicStreamUsage()
    with anthropic_client.messages.stream(model=CLAUDE, max_tokens=64, messages=MESSAGES) as stream:
        for event in stream:
            acc.add(event)  # includes the helper's derived "text" events: not counted twice
        final = stream.get_final_message()
    assert acc.text == TEXT
    assert (
        acc.result()
        == Usage.from_anthropic(final)
        == Usage(input_tokens=11 + 64, output_tokens=42, cache_read_tokens=64)
    )


def test_anthropic_stream_cut_short_is_flagged(
    provider_server: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    provider_server.queue(
        AnthropicReply(text=TEXT, input_tokens=30, cache_read_input_tokens=100, cut_short_after=2)
    )
    acc = AnthropicStreamUsage()
    stream = anthropic_client.messages.create(model=CLAUDE, max_tokens=256, messages=MESSAGES, stream=True)
    with pytest.raises((anthropic.APIConnectionError, httpx2.TransportError)):
        for _ in acc.wrap(stream):
            pass
    assert not acc.exact
    u = acc.result(counter=WordCounter())
    assert (u.input_tokens, u.cache_read_tokens) == (30 + 100, 100)  # message_start arrived: exact input
    assert (u.output_tokens, u.estimated) == (2, True)


async def test_async_anthropic_stream(
    provider_server: ProviderServer, async_anthropic_client: anthropic.AsyncAnthropic
) -> None:
    provider_server.queue(AnthropicReply(text=TEXT, input_tokens=8, output_tokens=21, message_deltas=2))
    acc = AnthropicStreamUsage()
    stream = await async_anthropic_client.messages.create(
        model=CLAUDE,
        max_tokens=64,
        messages=MESSAGES,
        stream=True,
    )
    async for _ in acc.awrap(stream):
        pass
    assert (acc.result().input_tokens, acc.result().output_tokens) == (8, 21)


# --- the server's other switches, which other tests rely on ------------------------------


def test_count_tokens_endpoint_errors_and_delay(
    provider_server: ProviderServer, anthropic_client: anthropic.Anthropic
) -> None:
    counted = anthropic_client.messages.count_tokens(model=CLAUDE, system="Be brief.", messages=MESSAGES)
    assert counted.input_tokens == 4 + 3 + 2  # user words, 3 per message, system words
    provider_server.count_tokens = lambda body: 1234
    assert anthropic_client.messages.count_tokens(model=CLAUDE, messages=MESSAGES).input_tokens == 1234
    provider_server.count_tokens_error = 529
    with pytest.raises(anthropic.InternalServerError) as info:
        anthropic_client.messages.count_tokens(model=CLAUDE, messages=MESSAGES)
    assert info.value.status_code == 529
    assert info.value.body["error"]["type"] == "overloaded_error"
    provider_server.count_tokens_error = None
    provider_server.count_tokens_delay = 5.0
    with pytest.raises(anthropic.APITimeoutError):
        anthropic_client.with_options(timeout=0.2).messages.count_tokens(model=CLAUDE, messages=MESSAGES)
    assert [r.path for r in provider_server.requests] == ["/v1/messages/count_tokens"] * 4


def test_error_replies_use_each_providers_format(
    provider_server: ProviderServer, openai_client: openai.OpenAI, anthropic_client: anthropic.Anthropic
) -> None:
    provider_server.queue(ErrorReply(status=500, message="boom"), ErrorReply(status=429, message="slow down"))
    with pytest.raises(openai.InternalServerError, match="boom"):
        openai_client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    with pytest.raises(anthropic.RateLimitError, match="slow down"):
        anthropic_client.messages.create(model=CLAUDE, max_tokens=8, messages=MESSAGES)
