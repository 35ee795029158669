"""Streams that end early are charged what was sent; lazily started streams are charged once.

Both LlamaIndex budget adapters (``BudgetCallbackHandler`` on the callback manager,
``CostEventHandler`` on the instrumentation dispatcher) are driven through real LlamaIndex call
paths: ``CustomLLM`` subclasses (``MockLLM`` included) decorated by LlamaIndex's own wrappers.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, CompletionResponse, LLMMetadata
from llama_index.core.callbacks import CallbackManager
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.llms import CustomLLM, MockLLM
from llama_index.core.llms.callbacks import llm_chat_callback

from llamaindex_tokenbudget import BudgetCallbackHandler, CostEventHandler, to_core_messages
from tokenbudget_core import TokenCounter
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.money import nanos_to_usd

MODEL = "gpt-4o"
COUNTER = TokenCounter.for_model(MODEL)
QUESTION = [ChatMessage(role="user", content="write a long essay " * 20)]
INPUT = int(COUNTER.count_messages(to_core_messages(QUESTION)))
WORD = "word "
LIMIT = Decimal("1")


class Streamer(CustomLLM):
    """Streams ``WORD`` chunks (cumulative ``message.content``, as LlamaIndex LLMs do).

    The sync stream raises ``ConnectionError`` after ``die_after`` chunks; the async one waits
    forever after ``die_after`` chunks (a stalled provider), so the consumer can cancel it.
    """

    die_after: int = 40

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=MODEL, is_chat_model=True)

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        raise NotImplementedError

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        raise NotImplementedError

    def _chunk(self, i: int) -> ChatResponse:
        return ChatResponse(message=ChatMessage(role="assistant", content=WORD * (i + 1)), delta=WORD)

    @llm_chat_callback()
    def stream_chat(self, messages: Any, **kwargs: Any) -> Iterator[ChatResponse]:
        def gen() -> Iterator[ChatResponse]:
            for i in range(self.die_after):
                yield self._chunk(i)
            raise ConnectionError("connection reset mid-stream")

        return gen()

    @llm_chat_callback()
    async def astream_chat(self, messages: Any, **kwargs: Any) -> AsyncIterator[ChatResponse]:
        async def gen() -> AsyncIterator[ChatResponse]:
            for i in range(self.die_after):
                yield self._chunk(i)
            await asyncio.Event().wait()  # the provider stalls; the client gives up

        return gen()


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    policy = BudgetPolicy(daily_usd=LIMIT)
    return Ledger("memory://", policy=policy, spool_path=tmp_path / "spool.jsonl")


@pytest.fixture
def on_root() -> Iterator[Callable[[BaseEventHandler], None]]:
    root, added = get_dispatcher(), []

    def add(handler: BaseEventHandler) -> None:
        root.add_event_handler(handler)
        added.append(handler)

    yield add
    for handler in added:
        if handler in root.event_handlers:
            root.event_handlers.remove(handler)


KINDS = ["callback", "events"]


def budgeted(kind: str, make: Callable[..., Any], ledger: Ledger, on_root: Any, **kw: Any) -> Any:
    if kind == "callback":
        return make(callback_manager=CallbackManager([BudgetCallbackHandler(ledger, model=MODEL)]), **kw)
    on_root(CostEventHandler(ledger=ledger, model=MODEL))
    return make(**kw)


def totals(ledger: Ledger) -> Counter[str]:
    total: Counter[str] = Counter()
    for row in ledger.store.rollup([ledger.day()]):
        total.update(row.values)
    return total


def assert_estimated(ledger: Ledger, *, output_text: str) -> None:
    row = totals(ledger)
    assert row["requests"] == 1
    assert row["input_tokens"] == INPUT
    assert row["output_tokens"] == int(COUNTER.count(output_text)) > 0
    assert row["estimated"] == 1
    assert row["cost_nanos"] > 0
    assert ledger.state().headroom["daily_usd"] == LIMIT - nanos_to_usd(row["cost_nanos"])  # nothing held


@pytest.mark.parametrize("kind", KINDS)
def test_a_stream_that_fails_midway_is_charged_what_it_streamed(
    kind: str, ledger: Ledger, on_root: Any
) -> None:
    llm = budgeted(kind, Streamer, ledger, on_root)
    received: list[ChatResponse] = []
    with pytest.raises(ConnectionError):
        received.extend(llm.stream_chat(QUESTION))
    assert len(received) == 40
    assert_estimated(ledger, output_text=WORD * 40)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_cancelled_stream_is_charged_what_it_streamed(
    kind: str, ledger: Ledger, on_root: Any
) -> None:
    llm = budgeted(kind, Streamer, ledger, on_root, die_after=30)
    received: list[ChatResponse] = []
    all_received = asyncio.Event()

    async def consume() -> None:
        async for chunk in await llm.astream_chat(QUESTION):
            received.append(chunk)
            if len(received) == 30:
                all_received.set()

    task = asyncio.create_task(consume())
    await all_received.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_estimated(ledger, output_text=WORD * 30)


@pytest.mark.parametrize("kind", KINDS)
def test_a_stream_that_fails_before_its_first_chunk_is_not_charged(
    kind: str, ledger: Ledger, on_root: Any
) -> None:
    llm = budgeted(kind, Streamer, ledger, on_root, die_after=0)
    with pytest.raises(ConnectionError):
        list(llm.stream_chat(QUESTION))
    assert totals(ledger)["requests"] == 0
    assert ledger.state().headroom["daily_usd"] == LIMIT  # the reservation was given back


@pytest.mark.parametrize("kind", KINDS)
def test_an_abandoned_stream_is_charged_the_text_streamed_before(
    kind: str, ledger: Ledger, on_root: Any
) -> None:
    llm = budgeted(kind, Streamer, ledger, on_root)
    stream = llm.stream_chat(QUESTION)
    for i, _ in enumerate(stream):
        if i == 9:
            break
    stream.close()
    assert_estimated(ledger, output_text=WORD * 10)


async def _drive(how: str, llm: MockLLM) -> None:
    messages = [ChatMessage(role="user", content="hi")]
    if how == "astream_chat":
        [_ async for _ in await llm.astream_chat(messages)]
    elif how == "astream_complete":
        [_ async for _ in await llm.astream_complete("hi")]
    elif how == "stream_chat":
        list(llm.stream_chat(messages))
    else:
        list(llm.stream_complete("hi"))


TWINS = [("astream_chat", "stream_chat"), ("astream_complete", "stream_complete")]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("how", "twin"), TWINS)
async def test_a_custom_llm_async_stream_is_charged_once(
    kind: str, how: str, twin: str, tmp_path: Path, on_root: Any
) -> None:
    """``CustomLLM.astream_*`` starts the sync stream only when iterated: still one provider call."""
    charged = []
    for name in (how, twin):
        ledger = Ledger("memory://", spool_path=tmp_path / f"{kind}-{name}.jsonl")
        llm = budgeted(kind, MockLLM, ledger, on_root, max_tokens=5)
        await _drive(name, llm)
        for handler in list(get_dispatcher().event_handlers):  # the next run's handler alone
            if isinstance(handler, CostEventHandler) and handler.ledger is ledger:
                get_dispatcher().event_handlers.remove(handler)
        charged.append(totals(ledger))
    assert charged[0]["requests"] == 1
    assert charged[0] == charged[1]
