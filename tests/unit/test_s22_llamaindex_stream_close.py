"""A LlamaIndex stream its consumer closes is closed down to the provider, and settled, in that close.

LlamaIndex alone, when the consumer closes a stream (``close()``, ``break`` out of a ``for`` loop,
``aclose()``), closes the provider's generator (an integration releases its SDK stream, the HTTP
response, in its ``finally``) and ends every LLM event of the call, the nested ones included
(``CustomLLM.stream_chat`` iterating ``stream_complete``). With ``BudgetCallbackHandler``
registered it must be the same: the provider's cleanup ran, the call is charged (the flagged
estimate of what was streamed) and nothing of its reservation is held, without the garbage
collector. The tests run with the collector disabled (as some servers run), so that nothing a
collection would rescue passes by chance.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from llama_index.core.base.llms.types import (
    ChatMessage,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from pydantic import Field

from llamaindex_tokenbudget import BudgetCallbackHandler
from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget
from tokenbudget_core.counting import TokenCounter
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.money import nanos_to_usd
from tokenbudget_core.stores.memory import MemoryStore

MODEL = "gpt-4o-mini"
COUNTER = TokenCounter.for_model(MODEL)
WORDS = [f"word{i} " for i in range(20)]


class ProviderLLM(CustomLLM):
    """Streams as an integration does: the generator it returns holds the provider's stream and
    releases it in its ``finally`` (noted in ``released``). ``raw`` carries no usage: an abandoned
    stream is charged the estimate of the text handed out."""

    released: list[str] = Field(default_factory=list, exclude=True)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=MODEL, num_output=300)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text="".join(WORDS))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        def sdk_stream() -> Iterator[CompletionResponse]:
            try:
                text = ""
                for word in WORDS:
                    text += word
                    yield CompletionResponse(text=text, delta=word)
            finally:
                self.released.append("sync")

        return sdk_stream()

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        async def sdk_stream() -> AsyncIterator[CompletionResponse]:
            try:
                text = ""
                for word in WORDS:
                    text += word
                    yield CompletionResponse(text=text, delta=word)
            finally:
                self.released.append("async")

        return sdk_stream()


@pytest.fixture
def no_gc() -> Iterator[None]:
    """The cyclic garbage collector off for the test (on again after it, as it was)."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@pytest.fixture
def ledger() -> Ledger:
    return Ledger(
        "memory://", policy=BudgetPolicy(features={"support": FeatureBudget(feature_daily_usd="10")})
    )


def budgeted(ledger: Ledger) -> ProviderLLM:
    handler = BudgetCallbackHandler(ledger, feature="support", user="u-1")
    return ProviderLLM(callback_manager=CallbackManager([handler]))


def assert_settled(ledger: Ledger, *, streamed: str) -> None:
    """One request charged the flagged estimate of ``streamed``; the feature's budget counts that
    charge and nothing more (the call's worst-case hold is gone)."""
    assert isinstance(ledger.store, MemoryStore)
    rows = ledger.store.rollup([ledger.day()])
    assert [(r.rollup_key, r.values["requests"], r.values["estimated"]) for r in rows] == [
        ("support/u-1/gpt-4o-mini", 1, 1)
    ]
    assert rows[0].values["output_tokens"] == COUNTER.count(streamed)
    charged = nanos_to_usd(rows[0].values["cost_nanos"])
    assert charged > 0
    assert ledger.state(feature="support", user="u-1").used["feature_daily_usd"] == charged


QUESTION = [ChatMessage(role="user", content="Say hi")]


@pytest.mark.usefixtures("no_gc")
def test_closing_a_stream_closes_the_provider_stream_and_settles_the_call(ledger: Ledger) -> None:
    llm = budgeted(ledger)
    stream = llm.stream_complete("Say hi")
    next(stream), next(stream)
    stream.close()
    assert llm.released == ["sync"]
    assert_settled(ledger, streamed="".join(WORDS[:2]))


@pytest.mark.usefixtures("no_gc")
@pytest.mark.parametrize("how", ["close", "break"])
def test_closing_a_nested_stream_settles_the_provider_call_in_the_close(ledger: Ledger, how: str) -> None:
    """``CustomLLM.stream_chat`` iterates ``stream_complete``: two events, the inner one charged."""
    llm = budgeted(ledger)
    if how == "close":
        stream = llm.stream_chat(QUESTION)
        next(stream), next(stream)
        stream.close()
    else:
        for i, _ in enumerate(llm.stream_chat(QUESTION)):
            if i == 1:
                break  # the stream, no longer referenced, is closed here
    assert llm.released == ["sync"]
    assert_settled(ledger, streamed="".join(WORDS[:2]))


async def released_soon(llm: ProviderLLM) -> list[str]:
    """What the provider released within a few event-loop steps: asyncio closes an async
    generator dropped unfinished from its loop (``aclose()`` scheduled by its finaliser hook), as
    LlamaIndex alone leaves the provider's one after ``aclose()``."""
    for _ in range(20):
        if llm.released:
            break
        await asyncio.sleep(0)
    return llm.released


@pytest.mark.usefixtures("no_gc")
async def test_acloseing_a_stream_closes_the_provider_stream_and_settles_the_call(ledger: Ledger) -> None:
    llm = budgeted(ledger)
    stream = await llm.astream_complete("Say hi")
    await anext(stream), await anext(stream)
    await stream.aclose()
    assert_settled(ledger, streamed="".join(WORDS[:2]))  # the event is the provider call: settled in aclose()
    assert await released_soon(llm) == ["async"]


@pytest.mark.usefixtures("no_gc")
async def test_acloseing_a_nested_stream_settles_the_provider_call(ledger: Ledger) -> None:
    """``CustomLLM.astream_chat`` iterates ``stream_chat``, which iterates ``stream_complete``."""
    llm = budgeted(ledger)
    stream = await llm.astream_chat(QUESTION)
    await anext(stream), await anext(stream)
    await stream.aclose()
    assert await released_soon(llm) == ["sync"]
    assert_settled(ledger, streamed="".join(WORDS[:2]))
