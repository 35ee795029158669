"""``BudgetCallbackHandler`` reserves the provider call of a lazily started stream on the payer
of the call that returned the stream, as ``CostEventHandler`` records it.

``CustomLLM.astream_chat`` / ``astream_complete`` (``MockLLM``'s, any ``CustomLLM``'s) return an
async generator that calls ``stream_chat`` / ``stream_complete`` (the inner event, the one
charged) only once it is iterated: maybe by a response writer task running inside another
request's ``attribute()`` block. That provider call is still the caller's: its feature, user,
conversation and overhead mark are charged, and the reader's budget neither pays for it nor
refuses it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms import ChatMessage, MockLLM

from llamaindex_tokenbudget import BudgetCallbackHandler
from tokenbudget_core import attribute
from tokenbudget_core.attribution import overhead
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.usage import Usage

MODEL = "gpt-4o-mini"
WORDS = 5


def ledger_and_llm(tmp_path: Path, policy: BudgetPolicy | None = None) -> tuple[Ledger, MockLLM]:
    ledger = Ledger("memory://", spool_path=tmp_path / "spool.jsonl", policy=policy)
    handler = BudgetCallbackHandler(ledger, model=MODEL, feature="chat")
    return ledger, MockLLM(max_tokens=WORDS, callback_manager=CallbackManager([handler]))


async def lazy_stream(llm: MockLLM, how: str) -> AsyncIterator[Any]:
    """The stream ``llm``'s ``astream_chat`` / ``astream_complete`` returns (not iterated yet)."""
    if how == "astream_chat":
        return await llm.astream_chat([ChatMessage(role="user", content="hello there")])
    return await llm.astream_complete("hello there")


def charged(ledger: Ledger) -> dict[str, tuple[int, int, int]]:
    """Per rollup key (feature/user/model): requests, overhead requests, conversations."""
    return {
        row.rollup_key: (
            int(row.values.get("requests", 0)),
            int(row.values.get("overhead_requests", 0)),
            int(row.values.get("conversations", 0)),
        )
        for row in ledger.store.rollup([ledger.day()])
    }


@pytest.mark.parametrize("how", ["astream_chat", "astream_complete"])
def test_a_lazy_stream_read_by_another_requests_writer_task_is_charged_to_its_caller(
    tmp_path: Path, how: str
) -> None:
    ledger, llm = ledger_and_llm(tmp_path)

    async def main() -> int:
        with attribute(user="alice", conversation="c-alice"), overhead("summariser"):
            stream = await lazy_stream(llm, how)

        async def writer() -> int:  # another request's task, in its own block
            with attribute(user="bob", conversation="c-bob"):
                return len([chunk async for chunk in stream])

        return await asyncio.create_task(writer())

    assert asyncio.run(main()) == WORDS
    assert charged(ledger) == {f"chat/alice/{MODEL}": (1, 1, 1)}


@pytest.mark.parametrize("how", ["astream_chat", "astream_complete"])
def test_a_reader_over_its_budget_is_not_refused_a_lazy_stream_its_caller_can_afford(
    tmp_path: Path, how: str
) -> None:
    ledger, llm = ledger_and_llm(tmp_path, BudgetPolicy(user_daily_usd="0.01"))
    ledger.record(Usage(input_tokens=1_000_000, output_tokens=0), model=MODEL, feature="chat", user="bob")
    assert ledger.state(user="bob").step != "normal"  # bob is over his budget

    async def main() -> int:
        with attribute(user="alice"):
            stream = await lazy_stream(llm, how)
        with attribute(user="bob"):
            return len([chunk async for chunk in stream])

    assert asyncio.run(main()) == WORDS
    assert charged(ledger)[f"chat/alice/{MODEL}"] == (1, 0, 0)
    assert charged(ledger)[f"chat/bob/{MODEL}"] == (1, 0, 0)  # only his own record


def test_a_lazy_stream_read_in_the_block_it_was_made_in_is_charged_there_once(tmp_path: Path) -> None:
    ledger, llm = ledger_and_llm(tmp_path)

    async def main() -> int:
        with attribute(user="alice", conversation="c-alice"):
            stream = await lazy_stream(llm, "astream_chat")
            return len([chunk async for chunk in stream])

    assert asyncio.run(main()) == WORDS
    assert charged(ledger) == {f"chat/alice/{MODEL}": (1, 0, 1)}


@pytest.mark.parametrize("how", ["astream_chat", "astream_complete"])
def test_a_background_jobs_lazy_stream_read_in_a_users_block_is_neither_refused_nor_charged_to_that_user(
    tmp_path: Path, how: str
) -> None:
    """The caller's block names no user (a background job): the provider call is charged as if
    it started where the job called, to no user. The reader's block (user, conversation,
    overhead mark) is replaced whole, not used for the fields the job left unset (review s22b 6)."""
    ledger, llm = ledger_and_llm(tmp_path, BudgetPolicy(user_daily_usd="0.01"))
    ledger.record(Usage(input_tokens=1_000_000, output_tokens=0), model=MODEL, feature="chat", user="bob")
    assert ledger.state(user="bob").step != "normal"  # bob is over his budget

    async def main() -> int:
        with attribute(feature="nightly-summaries"):  # a job: no user, no conversation
            stream = await lazy_stream(llm, how)

        async def writer() -> int:  # bob's request task
            with attribute(user="bob", conversation="c-bob"), overhead("router"):
                return len([chunk async for chunk in stream])

        return await asyncio.create_task(writer())

    assert asyncio.run(main()) == WORDS
    assert charged(ledger) == {
        f"nightly-summaries//{MODEL}": (1, 0, 0),
        f"chat/bob/{MODEL}": (1, 0, 0),  # only his own record
    }
