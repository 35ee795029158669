"""Streams through LangChain's v3 protocol (``stream_events`` / ``astream_events(version="v3")``)
that break off after output are charged what was streamed, as v1 ``stream`` / ``astream`` are.

The v3 protocol delivers the output through ``on_stream_event``; a model whose ``_stream`` does
not report ``on_llm_new_token`` itself (newer integrations leave it to LangChain) sends its text
only there. A stream that fails or is abandoned after three words was billed for them: the
handlers and the agent middleware charge the flagged estimate (counted input + those words).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGenerationChunk

from langchain_tokenbudget import AsyncBudgetCallbackHandler, BudgetCallbackHandler, BudgetMiddleware
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.counting import TokenCounter
from tokenbudget_core.ledger import Ledger

pytestmark = pytest.mark.filterwarnings("ignore::langchain_core._api.beta_decorator.LangChainBetaWarning")

MODEL = "gpt-4o-mini"
WORDS = [f"word{i} " for i in range(10)]
STREAMED = TokenCounter.for_model(MODEL).count("".join(WORDS[:3]))  # what the provider billed


class Words(GenericFakeChatModel):
    """Streams ``WORDS``; after three, fails (``fail``) or stalls. Reports nothing to the run
    manager itself: LangChain's v3 protocol turns the chunks into ``on_stream_event`` calls."""

    messages: Any = None
    fail: bool = True

    def _stream(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> Iterator[ChatGenerationChunk]:
        for i, word in enumerate(WORDS):
            if i == 3:
                if self.fail:
                    raise ConnectionError("the connection dropped")
                time.sleep(3600)
            yield ChatGenerationChunk(message=AIMessageChunk(content=word))

    async def _astream(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        for i, word in enumerate(WORDS):
            if i == 3:
                if self.fail:
                    raise ConnectionError("the connection dropped")
                await asyncio.Event().wait()
            yield ChatGenerationChunk(message=AIMessageChunk(content=word))


def ledger() -> Ledger:
    return Ledger("memory://", policy=BudgetPolicy(user_daily_tokens=10**6))


def charged(led: Ledger) -> tuple[int, int, int, int]:
    """(requests, estimated, output tokens, tokens still reserved) of user ``u`` today."""
    (row,) = led.store.rollup([led.day()])
    ((_, reserved),) = led.store.totals(led.day(), [("U/u", "tokens")], 0).values()
    return row.values["requests"], row.values["estimated"], row.values["output_tokens"], int(reserved)


@pytest.mark.parametrize("handler_class", [BudgetCallbackHandler, AsyncBudgetCallbackHandler])
def test_a_v3_stream_that_fails_after_output_is_charged_what_it_streamed(handler_class: Any) -> None:
    led = ledger()
    handler = handler_class(led, model=MODEL, user="u", max_output_tokens=100)
    stream = Words().stream_events("hi", config={"callbacks": [handler]}, version="v3")
    with pytest.raises(ConnectionError):
        for _ in stream.text:
            pass
    assert charged(led) == (1, 1, STREAMED, 0)


@pytest.mark.parametrize("handler_class", [BudgetCallbackHandler, AsyncBudgetCallbackHandler])
async def test_an_async_v3_stream_abandoned_after_output_is_charged_what_it_streamed(
    handler_class: Any,
) -> None:
    led = ledger()
    handler = handler_class(led, model=MODEL, user="u", max_output_tokens=100)
    stream = await Words(fail=False).astream_events("hi", config={"callbacks": [handler]}, version="v3")
    async with stream:
        seen = 0
        async for _ in stream.text:
            seen += 1
            if seen == 3:
                break
    assert charged(led) == (1, 1, STREAMED, 0)


@pytest.mark.parametrize("handler_class", [BudgetCallbackHandler, AsyncBudgetCallbackHandler])
def test_a_v3_stream_that_also_reports_tokens_is_not_charged_twice(handler_class: Any) -> None:
    """``GenericFakeChatModel`` reports each chunk to ``on_llm_new_token`` as well (as many
    provider integrations do): the same words are counted once."""

    class Both(Words):
        def _stream(
            self, messages: list[BaseMessage], *args: Any, **kwargs: Any
        ) -> Iterator[ChatGenerationChunk]:
            run_manager = kwargs.get("run_manager")
            for chunk in super()._stream(messages, *args, **kwargs):
                if run_manager is not None:
                    run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk

    led = ledger()
    handler = handler_class(led, model=MODEL, user="u", max_output_tokens=100)
    with pytest.raises(ConnectionError):
        for _ in Both().stream_events("hi", config={"callbacks": [handler]}, version="v3").text:
            pass
    assert charged(led) == (1, 1, STREAMED, 0)


async def test_an_agent_streamed_through_v3_charges_a_model_call_that_broke_off() -> None:
    led = ledger()
    agent = create_agent(
        Words(), middleware=[BudgetMiddleware(led, model=MODEL, user="u", max_output_tokens=100)]
    )

    async def run() -> None:
        async for _ in await agent.astream_events({"messages": [HumanMessage("hi")]}, version="v3"):
            pass

    with pytest.raises(ConnectionError):
        await run()
    assert charged(led) == (1, 1, STREAMED, 0)
