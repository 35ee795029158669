"""A LlamaIndex stream interrupted after its usage chunk is charged the usage the provider reported.

A stream that stops early (the consumer lets go, the connection drops, the task is cancelled) was
sent: both LlamaIndex budget adapters charge it. When the last chunk handed out already carried
the provider's usage (OpenAI's closing ``include_usage`` chunk: empty ``choices``, a ``usage``),
that usage is charged, not estimated; before it, the charge is the flagged estimate.

The LLM streams as ``llama-index-llms-openai``'s ``OpenAI._stream_chat`` does: one
``ChatResponse`` per SDK ``ChatCompletionChunk`` (``raw``), the text so far as the message, the
token counts in ``additional_kwargs``, the usage chunk last. It runs through LlamaIndex's own
callback wrappers; the handlers and the ledger are tokenbudget's, running for real.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, ChatResponse
from llama_index.core.callbacks import CallbackManager
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.llms.callbacks import llm_chat_callback
from openai.types.chat import ChatCompletionChunk
from test_llamaindex_budget import CHUNKS, COUNTER, MODEL, QUESTION, REPORTED, ProviderLLM, assert_charged

from llamaindex_tokenbudget import BudgetCallbackHandler, CostEventHandler, to_core_messages
from tokenbudget_core import Usage
from tokenbudget_core.ledger import Ledger

KINDS = ["callback", "events"]
COUNTED = int(COUNTER.count_messages(to_core_messages(QUESTION)))


def sdk_chunk(delta: str | None, usage: Usage | None = None) -> ChatCompletionChunk:
    """An OpenAI SDK stream chunk: a text delta, or (``usage``) the closing usage chunk."""
    data: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": MODEL,
    }
    if usage is None:
        data["choices"] = [{"index": 0, "delta": {"role": "assistant", "content": delta}}]
    else:
        data["choices"] = []
        data["usage"] = {
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
        }
    return ChatCompletionChunk.model_validate(data)


class OpenAIStreamLLM(ProviderLLM):
    """Streams like LlamaIndex's OpenAI integration; then, as told, ends, fails or stalls."""

    then: str = "end"
    """``end``; ``fail``: the connection drops after the usage chunk; ``stall``: the provider
    stalls after it (an async consumer gives up)."""

    def __init__(self, *, then: str = "end", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.then = then

    def _openai_chunks(self) -> Iterator[ChatResponse]:
        text = ""
        for chunk in [*(sdk_chunk(d) for d in CHUNKS), sdk_chunk(None, REPORTED)]:
            delta = chunk.choices[0].delta.content or "" if chunk.choices else ""
            text += delta
            counts = {}
            if chunk.usage is not None:
                counts = {
                    "prompt_tokens": chunk.usage.prompt_tokens,
                    "completion_tokens": chunk.usage.completion_tokens,
                    "total_tokens": chunk.usage.total_tokens,
                }
            message = ChatMessage(role="assistant", content=text)
            yield ChatResponse(message=message, delta=delta, raw=chunk, additional_kwargs=counts)

    @llm_chat_callback()
    def stream_chat(self, messages: Any, **kwargs: Any) -> Iterator[ChatResponse]:
        def gen() -> Iterator[ChatResponse]:
            yield from self._openai_chunks()
            if self.then == "fail":
                raise ConnectionError("connection reset after the usage chunk")

        return gen()

    @llm_chat_callback()
    async def astream_chat(self, messages: Any, **kwargs: Any) -> AsyncIterator[ChatResponse]:
        async def gen() -> AsyncIterator[ChatResponse]:
            for response in self._openai_chunks():
                yield response
            if self.then == "stall":
                await asyncio.Event().wait()

        return gen()


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger("memory://", spool_path=tmp_path / "spool.jsonl")


@pytest.fixture
def handlers(ledger: Ledger) -> Iterator[Ledger]:
    """The event handler on the root dispatcher for the test (removed after it)."""
    handler = CostEventHandler(ledger=ledger, feature="support", user="u-1")
    root = get_dispatcher()
    root.add_event_handler(handler)
    yield ledger
    root.event_handlers.remove(handler)


def budgeted(kind: str, ledger: Ledger, request: pytest.FixtureRequest, **kw: Any) -> OpenAIStreamLLM:
    """The LLM charged by ``BudgetCallbackHandler`` (``callback``) or ``CostEventHandler`` (``events``)."""
    if kind == "callback":
        handler = BudgetCallbackHandler(ledger, feature="support", user="u-1")
        return OpenAIStreamLLM(callback_manager=CallbackManager([handler]), **kw)
    request.getfixturevalue("handlers")
    return OpenAIStreamLLM(**kw)


def estimate(streamed: str) -> Usage:
    return Usage(input_tokens=COUNTED, output_tokens=int(COUNTER.count(streamed)), estimated=True)


@pytest.mark.parametrize("kind", KINDS)
def test_a_complete_stream_is_charged_its_reported_usage(
    kind: str, ledger: Ledger, request: pytest.FixtureRequest
) -> None:
    llm = budgeted(kind, ledger, request)
    assert "".join(r.delta or "" for r in llm.stream_chat(QUESTION)) == "".join(CHUNKS)
    assert_charged(ledger, REPORTED)


@pytest.mark.parametrize("kind", KINDS)
def test_a_stream_abandoned_after_its_usage_chunk_is_charged_the_reported_usage(
    kind: str, ledger: Ledger, request: pytest.FixtureRequest
) -> None:
    llm = budgeted(kind, ledger, request)
    stream = llm.stream_chat(QUESTION)
    last = [next(stream) for _ in range(len(CHUNKS) + 1)][-1]
    assert last.raw.usage is not None  # the usage chunk was handed out...
    stream.close()  # ...and the consumer stopped before the stream ended
    assert_charged(ledger, REPORTED)


@pytest.mark.parametrize("kind", KINDS)
def test_a_stream_failing_after_its_usage_chunk_is_charged_the_reported_usage(
    kind: str, ledger: Ledger, request: pytest.FixtureRequest
) -> None:
    llm = budgeted(kind, ledger, request, then="fail")
    received: list[ChatResponse] = []
    with pytest.raises(ConnectionError):
        received.extend(llm.stream_chat(QUESTION))
    assert len(received) == len(CHUNKS) + 1
    assert_charged(ledger, REPORTED)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_stream_cancelled_after_its_usage_chunk_is_charged_the_reported_usage(
    kind: str, ledger: Ledger, request: pytest.FixtureRequest
) -> None:
    llm = budgeted(kind, ledger, request, then="stall")
    received: list[ChatResponse] = []
    all_received = asyncio.Event()

    async def consume() -> None:
        async for chunk in await llm.astream_chat(QUESTION):
            received.append(chunk)
            if len(received) == len(CHUNKS) + 1:
                all_received.set()

    task = asyncio.create_task(consume())
    await all_received.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_charged(ledger, REPORTED)


@pytest.mark.parametrize("kind", KINDS)
def test_a_stream_abandoned_before_its_usage_chunk_is_charged_an_estimate(
    kind: str, ledger: Ledger, request: pytest.FixtureRequest
) -> None:
    llm = budgeted(kind, ledger, request)
    stream = llm.stream_chat(QUESTION)
    [next(stream) for _ in CHUNKS]  # all the text, not the usage chunk
    stream.close()
    assert_charged(ledger, estimate("".join(CHUNKS)))


@pytest.mark.parametrize("kind", ["stream_chat", "astream_chat"])
def test_an_abandoned_nested_stream_is_charged_and_holds_nothing(kind: str) -> None:
    """``CustomLLM.stream_chat`` wraps ``stream_complete`` (two nested events): a consumer that
    stops after two chunks gets the streamed text charged, on both handlers, and nothing held."""
    import gc

    from llama_index.core.llms import MockLLM

    from tokenbudget_core.finalizing import wait_deferred
    from tokenbudget_core.stores.memory import MemoryStore

    on_callback, on_events = Ledger("memory://"), Ledger("memory://")
    handler = BudgetCallbackHandler(on_callback, model="gpt-4o-mini")
    events = CostEventHandler(ledger=on_events, model="gpt-4o-mini")
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(events)
    try:
        llm = MockLLM(max_tokens=5, callback_manager=CallbackManager([handler]))
        messages = [ChatMessage(role="user", content="Say hi")]
        if kind == "stream_chat":
            stream = llm.stream_chat(messages)
            next(stream), next(stream)
            stream.close()
        else:

            async def two_chunks(model: MockLLM) -> None:
                stream = await model.astream_chat(messages)
                await anext(stream), await anext(stream)
                await stream.aclose()

            asyncio.run(two_chunks(llm))
        del llm
        gc.collect()  # the streams it closes end through the deferred-work thread (see finalizing)
        assert wait_deferred(10)
    finally:
        dispatcher.event_handlers.remove(events)
    for ledger in (on_callback, on_events):
        assert isinstance(ledger.store, MemoryStore)
        rows = ledger.store.rollup([ledger.day()])
        assert [(r.values["requests"], r.values["estimated"]) for r in rows] == [(1, 1)]
        assert rows[0].values["output_tokens"] > 0
        payer = ("u//", "tokens")  # no feature, no user
        spent, reserved = ledger.store.totals(ledger.day(), [payer], int(ledger.clock() * 1000))[payer]
        assert spent > 0
        assert reserved == 0
    assert handler._calls == {}
    assert events._calls == {}


def test_a_report_beyond_what_a_ledger_stores_is_charged_as_an_estimate_by_both_handlers() -> None:
    """A provider's absurd usage after the call went out: both handlers charge the flagged
    estimate (the callback one holds nothing after it), neither drops the call."""
    from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
    from llama_index.core.llms.callbacks import llm_completion_callback

    class AbsurdLLM(CustomLLM):
        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(model_name="gpt-4o-mini")

        @llm_completion_callback()
        def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
            return CompletionResponse(
                text="hello there", raw={"usage": {"prompt_tokens": 10**20, "completion_tokens": 5}}
            )

        @llm_completion_callback()
        def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
            raise NotImplementedError

    on_callback, on_events = Ledger("memory://"), Ledger("memory://")
    events = CostEventHandler(ledger=on_events)
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(events)
    try:
        llm = AbsurdLLM(callback_manager=CallbackManager([BudgetCallbackHandler(on_callback)]))
        assert llm.complete("hi").text == "hello there"
    finally:
        dispatcher.event_handlers.remove(events)
    for ledger in (on_callback, on_events):
        rows = ledger.store.rollup([ledger.day()])
        assert [(r.values["requests"], r.values["estimated"]) for r in rows] == [(1, 1)]
        payer = ("u//", "tokens")
        assert ledger.store.totals(ledger.day(), [payer], int(ledger.clock() * 1000))[payer][1] == 0
