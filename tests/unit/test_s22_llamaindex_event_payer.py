"""``CostEventHandler`` records a call on the payer in force where it started, as
``BudgetCallbackHandler`` reserves it (review s22 B3): a stream created inside one user's
``attribute()`` block and read, closed or broken inside another's (a response writer running
under its own request's context, another thread, another asyncio task) is charged to the user,
conversation and overhead mark of its start, not to the block it is read in. Both handlers
are driven by real LlamaIndex runs (a ``CustomLLM`` reporting OpenAI usage in ``raw``), each on
its own memory ledger, and their ledger rows compared.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.callbacks import CallbackManager
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM

from llamaindex_tokenbudget import BudgetCallbackHandler, CostEventHandler
from tokenbudget_core import attribute
from tokenbudget_core.attribution import overhead
from tokenbudget_core.ledger import Ledger

MODEL = "gpt-4o-mini"
PROMPT, COMPLETION = 100, 10
MESSAGES = [ChatMessage(role="user", content="hello there")]
CHUNKS = 3


def raw() -> dict[str, Any]:
    return {"model": MODEL, "usage": {"prompt_tokens": PROMPT, "completion_tokens": COMPLETION}}


class Provider(CustomLLM):
    """Streams ``CHUNKS`` chunks, the last reporting the usage (as OpenAI's closing chunk does);
    plain calls report it too. ``astream_chat`` is native (its event starts when it is awaited,
    as a provider integration's does); ``astream_complete`` is ``CustomLLM``'s (lazy: it calls
    ``stream_complete`` once iterated). ``break_after`` chunks, a stream raises."""

    break_after: int | None = None

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=MODEL, is_chat_model=True)

    def _pieces(self) -> Iterator[tuple[str, dict[str, Any] | None]]:
        for i in range(CHUNKS):
            if self.break_after is not None and i == self.break_after:
                raise ConnectionError("connection reset mid-stream")
            yield "w " * (i + 1), raw() if i == CHUNKS - 1 else None

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text="w " * CHUNKS, raw=raw())

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        def gen() -> CompletionResponseGen:
            for text, usage in self._pieces():
                yield CompletionResponse(text=text, delta="w ", raw=usage)

        return gen()

    @llm_chat_callback()
    def stream_chat(self, messages: Any, **kwargs: Any) -> Iterator[ChatResponse]:
        def gen() -> Iterator[ChatResponse]:
            for text, usage in self._pieces():
                yield ChatResponse(message=ChatMessage(role="assistant", content=text), delta="w ", raw=usage)

        return gen()

    @llm_chat_callback()
    async def astream_chat(self, messages: Any, **kwargs: Any) -> AsyncIterator[ChatResponse]:
        async def gen() -> AsyncIterator[ChatResponse]:
            for text, usage in self._pieces():
                yield ChatResponse(message=ChatMessage(role="assistant", content=text), delta="w ", raw=usage)

        return gen()


Rows = list[tuple[str, dict[str, int]]]
KEPT = ("requests", "input_tokens", "output_tokens", "estimated", "overhead_requests", "conversations")


def rows(ledger: Ledger) -> Rows:
    """The ledger's rollup rows (payer / model key) with the figures a payer's report reads."""
    found = [
        (row.rollup_key, {k: int(row.values.get(k, 0)) for k in KEPT})
        for row in ledger.store.rollup([ledger.day()])
    ]
    return sorted(found)


@pytest.fixture
def both(tmp_path: Path) -> Iterator[Callable[..., tuple[Provider, Ledger, Ledger]]]:
    """``make(**llm_fields)``: a provider whose calls a ``BudgetCallbackHandler`` charges to one
    ledger and a ``CostEventHandler`` (on the root dispatcher) records on another, both with
    ``feature="f"`` and the given handler ``user``."""
    added: list[CostEventHandler] = []

    def make(user: str | None = None, **fields: Any) -> tuple[Provider, Ledger, Ledger]:
        n = len(added)
        budget = Ledger("memory://", spool_path=tmp_path / f"budget{n}.jsonl")
        events = Ledger("memory://", spool_path=tmp_path / f"events{n}.jsonl")
        handler = CostEventHandler(ledger=events, feature="f", user=user)
        get_dispatcher().add_event_handler(handler)
        added.append(handler)
        manager = CallbackManager([BudgetCallbackHandler(budget, feature="f", user=user)])
        return Provider(callback_manager=manager, **fields), budget, events

    yield make
    root = get_dispatcher()
    for handler in added:
        if handler in root.event_handlers:
            root.event_handlers.remove(handler)


def alice_row(*, requests: int = 1, overhead_requests: int = 0, conversations: int = 0) -> Rows:
    return [
        (
            f"f/alice/{MODEL}",
            {
                "requests": requests,
                "input_tokens": PROMPT * requests,
                "output_tokens": COMPLETION * requests,
                "estimated": 0,
                "overhead_requests": overhead_requests,
                "conversations": conversations,
            },
        )
    ]


def started_for_alice(start: Callable[[], Any]) -> Any:
    """``start()`` run for alice, in conversation c-alice, as the summariser's overhead."""
    with attribute(user="alice", conversation="c-alice"), overhead("summariser"):
        return start()


@pytest.mark.parametrize("how", ["stream_chat", "stream_complete"])
def test_a_stream_read_in_another_users_block_is_charged_to_the_user_who_started_it(
    both: Callable[..., tuple[Provider, Ledger, Ledger]], how: str
) -> None:
    llm, budget, events = both()
    args = (MESSAGES,) if how == "stream_chat" else ("hi",)
    stream = started_for_alice(lambda: getattr(llm, how)(*args))
    with attribute(user="bob", conversation="c-bob"):
        assert len(list(stream)) == CHUNKS
    expected = alice_row(overhead_requests=1, conversations=1)
    assert rows(events) == rows(budget) == expected


def test_the_conversation_charged_is_the_one_the_stream_started_in(
    both: Callable[..., tuple[Provider, Ledger, Ledger]],
) -> None:
    llm, budget, events = both()
    with attribute(user="alice", conversation="c-reader"):
        llm.complete("hi")  # c-reader counted: a stream charged to it again would add none
    with attribute(user="alice", conversation="c-alice"):
        stream = llm.stream_complete("hi")
    with attribute(conversation="c-reader"):
        list(stream)
    assert rows(events) == rows(budget) == alice_row(requests=2, conversations=2)


@pytest.mark.parametrize("copy_context", [False, True], ids=["plain thread", "copied context"])
def test_a_stream_read_in_another_thread_is_charged_to_the_user_who_started_it(
    both: Callable[..., tuple[Provider, Ledger, Ledger]], copy_context: bool
) -> None:
    llm, budget, events = both()
    stream = started_for_alice(lambda: llm.stream_chat(MESSAGES))

    def read() -> None:
        with attribute(user="bob", conversation="c-bob"):
            list(stream)

    target = contextvars.copy_context().run if copy_context else None
    thread = threading.Thread(target=(lambda: target(read)) if target else read)
    thread.start()
    thread.join()
    assert rows(events) == rows(budget) == alice_row(overhead_requests=1, conversations=1)


def test_an_async_stream_read_in_another_task_is_charged_to_the_user_who_started_it(
    both: Callable[..., tuple[Provider, Ledger, Ledger]],
) -> None:
    llm, budget, events = both()

    async def main() -> None:
        with attribute(user="alice", conversation="c-alice"), overhead("summariser"):
            stream = await llm.astream_chat(MESSAGES)

        async def read() -> int:
            with attribute(user="bob", conversation="c-bob"):
                return len([chunk async for chunk in stream])

        assert await asyncio.create_task(read()) == CHUNKS

    asyncio.run(main())
    assert rows(events) == rows(budget) == alice_row(overhead_requests=1, conversations=1)


@pytest.mark.parametrize("end", ["closed", "broken"])
def test_a_stream_closed_or_broken_in_another_users_block_is_charged_to_the_user_who_started_it(
    both: Callable[..., tuple[Provider, Ledger, Ledger]], end: str
) -> None:
    llm, budget, events = both(break_after=2 if end == "broken" else None)
    stream = started_for_alice(lambda: llm.stream_chat(MESSAGES))
    with attribute(user="bob", conversation="c-bob"):
        next(stream)
        if end == "closed":
            stream.close()
        else:
            with pytest.raises(ConnectionError):
                list(stream)
    charged = rows(events)
    assert charged == rows(budget)
    assert [(key, values["requests"], values["overhead_requests"]) for key, values in charged] == [
        (f"f/alice/{MODEL}", 1, 1)
    ]


def test_a_stream_started_with_no_block_is_charged_to_the_handlers_user_wherever_it_is_read(
    both: Callable[..., tuple[Provider, Ledger, Ledger]],
) -> None:
    llm, budget, events = both(user="alice")
    stream = llm.stream_complete("hi")
    with attribute(user="bob"):
        list(stream)
    assert rows(events) == rows(budget) == alice_row()


def test_a_lazily_started_stream_is_recorded_on_the_payer_of_the_call_that_returned_it(
    both: Callable[..., tuple[Provider, Ledger, Ledger]],
) -> None:
    """``CustomLLM.astream_complete`` calls ``stream_complete`` (the provider call, the event
    recorded) only once the stream is iterated: in the reader's block. It is still alice's call."""
    llm, _, events = both()

    async def main() -> None:
        with attribute(user="alice"):
            stream = await llm.astream_complete("hi")
        with attribute(user="bob"):
            assert len([chunk async for chunk in stream]) == CHUNKS

    asyncio.run(main())
    assert [key for key, _ in rows(events)] == [f"f/alice/{MODEL}"]


@pytest.mark.parametrize("how", ["chat", "complete", "achat", "acomplete"])
def test_plain_calls_are_charged_to_the_block_they_are_made_in_by_both_handlers(
    both: Callable[..., tuple[Provider, Ledger, Ledger]], how: str
) -> None:
    llm, budget, events = both()
    arg: Any = MESSAGES if how.endswith("chat") else "hi"
    with attribute(user="alice", conversation="c-alice"), overhead("summariser"):
        result = getattr(llm, how)(arg)
        if how.startswith("a"):
            asyncio.run(result)
    assert rows(events) == rows(budget) == alice_row(overhead_requests=1, conversations=1)


def test_both_handlers_charge_a_lazily_started_stream_to_the_payer_of_the_call_that_returned_it(
    both: Callable[..., tuple[Provider, Ledger, Ledger]],
) -> None:
    llm, budget, events = both()

    async def main() -> None:
        with attribute(user="alice"):
            stream = await llm.astream_complete("hi")
        with attribute(user="bob"):
            [chunk async for chunk in stream]

    asyncio.run(main())
    assert rows(events) == rows(budget) == alice_row()


@pytest.mark.parametrize("job", ["feature block", "no block"])
def test_both_handlers_charge_a_lazy_stream_whose_caller_names_no_user_to_no_user(
    both: Callable[..., tuple[Provider, Ledger, Ledger]], job: str
) -> None:
    """A background job's lazily started stream, read in bob's block: the provider call is
    charged as if it started where the job called (no user, no conversation, no overhead
    mark), not to the reader's ids the job left unset (review s22b 6)."""
    llm, budget, events = both()

    async def main() -> None:
        if job == "feature block":
            with attribute(feature="summaries"):
                stream = await llm.astream_complete("hi")
        else:
            stream = await llm.astream_complete("hi")
        with attribute(user="bob", conversation="c-bob"), overhead("router"):
            assert len([chunk async for chunk in stream]) == CHUNKS

    asyncio.run(main())
    feature = "summaries" if job == "feature block" else "f"
    expected = [(f"{feature}//{MODEL}", {**alice_row()[0][1]})]
    assert rows(events) == rows(budget) == expected


def test_a_lazy_streams_ids_its_caller_left_unset_come_from_the_handlers_defaults_not_the_reader(
    both: Callable[..., tuple[Provider, Ledger, Ledger]],
) -> None:
    llm, budget, events = both(user="service")

    async def main() -> None:
        with attribute(conversation="c-job"):
            stream = await llm.astream_complete("hi")
        with attribute(feature="bobs", user="bob", conversation="c-bob"):
            assert len([chunk async for chunk in stream]) == CHUNKS

    asyncio.run(main())
    [(_, figures)] = alice_row(conversations=1)
    assert rows(events) == rows(budget) == [(f"f/service/{MODEL}", figures)]
