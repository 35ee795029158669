"""The LangChain budget handlers on real Claude streams (langchain-anthropic over sockets to the
loopback provider server): streams that break off, and streams that write a 1-hour prompt cache."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import anthropic
import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import HumanMessage
from provider_server import AnthropicReply, ProviderServer
from pydantic import SecretStr

from langchain_tokenbudget import AsyncBudgetCallbackHandler, BudgetCallbackHandler
from tokenbudget_core import TokenCounter, Usage, cost_of
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.money import usd_to_nanos

pytestmark = pytest.mark.integration

CLAUDE = "claude-haiku-4-5"
QUESTION = "What is the weather in Oslo today?"
TEXT = "The weather in Oslo is mild today with light winds from the west and some sun."
HANDLERS = [BudgetCallbackHandler, AsyncBudgetCallbackHandler]


_CLIENTS = itertools.count(1)


def claude(server: ProviderServer, *, streaming: bool = False) -> ChatAnthropic:
    """``streaming=True``: ``invoke`` reads a stream. (Set to ``False`` explicitly, the option
    would make ``stream()`` fall back to one non-streamed request.)

    langchain-anthropic shares one async HTTP client per base URL and timeout, bound to the event
    loop that first used it; each test runs a loop of its own: a timeout of its own gives each
    model a client of its own (closed by :func:`run`)."""
    extra = {"streaming": True} if streaming else {}
    return ChatAnthropic(
        base_url=server.url,
        api_key=SecretStr("test"),
        model=CLAUDE,
        max_retries=0,
        max_tokens=200,
        default_request_timeout=60 + next(_CLIENTS) / 1000,
        **extra,
    )


def charged(ledger: Ledger) -> dict[str, int]:
    rows = [r.values for r in ledger.store.rollup([ledger.day()])]
    return {k: sum(r.get(k, 0) for r in rows) for k in {k for r in rows for k in r}}


async def run(model: ChatAnthropic, how: str, messages: Any, handler: Any) -> None:
    """Call ``model`` as ``how`` says."""
    config: Any = {"callbacks": [handler]}
    if how == "invoke":
        model.invoke(messages, config=config)
        return
    if how == "stream":
        list(model.stream(messages, config=config))
        return
    try:
        if how == "ainvoke":
            await model.ainvoke(messages, config=config)
        else:
            async for _ in model.astream(messages, config=config):
                pass
    finally:  # this model's own client (see claude()): closed before the test's loop is
        await model._async_client.close()


# -- a stream that breaks off is charged the same, read with stream() or through invoke() ------------


@pytest.mark.parametrize("handler_class", HANDLERS)
async def test_a_streaming_invoke_that_breaks_off_is_charged_like_the_same_stream(
    tmp_path: Path,
    provider_server: ProviderServer,
    anthropic_client: anthropic.Anthropic,
    handler_class: type,
) -> None:
    """``streaming=True`` (as agents run models) makes ``invoke`` read the stream through
    ``generate()``, whose ``on_llm_error`` carries no partial reply: the handler charges the text
    it saw streamed, as it does for ``.stream()`` (the request was sent and is billed)."""
    counter = TokenCounter.for_model(CLAUDE, anthropic_client=anthropic_client)
    figures = {}
    for how in ("stream", "invoke", "astream", "ainvoke"):
        ledger = Ledger("memory://", spool_path=tmp_path / f"{how}.jsonl")
        handler = handler_class(ledger, counter=counter)
        provider_server.queue(
            AnthropicReply(text=TEXT, input_tokens=400, output_tokens=30, cut_short_after=8)
        )
        model = claude(provider_server, streaming=how.endswith("invoke"))
        with pytest.raises(Exception, match=r"(?i)peer closed|incomplete|protocol"):
            await run(model, how, QUESTION, handler)
        figures[how] = charged(ledger)
        assert handler._runs == {}
    assert figures["invoke"]["requests"] == figures["invoke"]["estimated"] == 1
    assert figures["invoke"]["output_tokens"] > 0
    assert figures["invoke"] == figures["stream"] == figures["ainvoke"] == figures["astream"]


# -- a stream writing a 1-hour prompt cache is charged at the 1-hour write rate ----------------------

DOC = "Our refund policy. " * 2000


def marked(*ttls: str) -> list[HumanMessage]:
    blocks: list[str | dict[str, Any]] = [
        {"type": "text", "text": f"{DOC} ({i})", "cache_control": {"type": "ephemeral", "ttl": ttl}}
        for i, ttl in enumerate(ttls)
    ]
    blocks.append({"type": "text", "text": "Can I get a refund?"})
    return [HumanMessage(content=blocks)]


@pytest.mark.parametrize("handler_class", HANDLERS)
@pytest.mark.parametrize("how", ["invoke", "stream", "streaming-invoke", "astream", "streaming-ainvoke"])
async def test_a_claude_call_writing_the_1h_cache_is_charged_what_anthropic_bills(
    tmp_path: Path, provider_server: ProviderServer, handler_class: type, how: str
) -> None:
    """Streamed, Claude reports cache writes without their 1h/5m split (``message_delta`` has none,
    and langchain-anthropic drops ``message_start``'s): they are charged at the TTL the request
    marked, as Anthropic bills them, and as the same call made without streaming is charged."""
    ledger = Ledger("memory://", spool_path=tmp_path / "spool.jsonl")
    handler = handler_class(ledger)
    provider_server.queue(AnthropicReply(input_tokens=20, ephemeral_1h_input_tokens=10_000, output_tokens=7))
    model = claude(provider_server, streaming=how.startswith("streaming-"))
    await run(model, how.removeprefix("streaming-"), marked("1h"), handler)
    billed = Usage(
        input_tokens=10_020, output_tokens=7, cache_write_tokens=10_000, cache_write_1h_tokens=10_000
    )
    totals = charged(ledger)
    assert (totals["cache_write_tokens"], totals["estimated"]) == (10_000, 0)
    assert totals["cost_nanos"] == usd_to_nanos(cost_of(billed, CLAUDE))


@pytest.mark.parametrize("ttls", [("5m",), ("1h", "5m")])
def test_a_stream_marked_5m_or_mixed_is_charged_5m_writes(
    tmp_path: Path, provider_server: ProviderServer, ttls: tuple[str, ...]
) -> None:
    """Without the split, writes are 1h writes only when every marker is 1h: 5m-only stays 5m,
    and so does a request marking both (which blocks were written is unknown: flagged)."""
    ledger = Ledger("memory://", spool_path=tmp_path / "spool.jsonl")
    provider_server.queue(AnthropicReply(input_tokens=20, ephemeral_5m_input_tokens=10_000, output_tokens=7))
    list(claude(provider_server).stream(marked(*ttls), config={"callbacks": [BudgetCallbackHandler(ledger)]}))
    billed = Usage(input_tokens=10_020, output_tokens=7, cache_write_tokens=10_000)
    assert charged(ledger)["estimated"] == (len(ttls) > 1)
    assert charged(ledger)["cost_nanos"] == usd_to_nanos(cost_of(billed, CLAUDE))
