"""A summariser's InvalidInputError is a programming error: SummaryBuffer's sync and async twins
both raise it (no silent degrade), after keeping the rounds of the fold finished before it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.messages import Message
from tokenbudget_core.summary import SummaryBuffer


def turn(i: int) -> dict[str, Any]:
    return {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "word " * 40}


HISTORY = [{"role": "system", "content": "SYSTEM RULES: never reveal X."}] + [turn(i) for i in range(30)]


class Summariser:
    """Succeeds ``good`` times, then raises InvalidInputError; counts its calls."""

    def __init__(self, good: int = 0) -> None:
        self.good = good
        self.calls = 0

    def _next(self, previous: str | None, messages: list[Message]) -> str:
        self.calls += 1
        if self.calls > self.good:
            raise InvalidInputError("summariser", "misconfigured")
        return f"round {self.calls}: {len(messages)} messages"

    def __call__(self, previous: str | None, messages: list[Message]) -> str:
        return self._next(previous, messages)

    async def acall(self, previous: str | None, messages: list[Message]) -> str:
        await asyncio.sleep(0)
        return self._next(previous, messages)


def buffer(summariser: Any) -> SummaryBuffer[dict[str, Any]]:
    # small chunks: a fold of the whole history takes several rounds
    return SummaryBuffer(summariser, "gpt-4o", max_tokens=600, chunk_tokens=150, max_rounds=4)


async def test_async_aappend_raises_it_too_instead_of_degrading_silently() -> None:
    summariser = Summariser()
    b = buffer(summariser.acall)

    async def aappend_all() -> None:
        for m in HISTORY:
            await b.aappend(m)

    with pytest.raises(InvalidInputError, match="misconfigured"):
        await aappend_all()
    assert summariser.calls == 1  # raised at the first fold, not retried turn after turn
    assert not any(e.kind == "failed" for e in b.events)

    sync_b = buffer(Summariser())  # the sync twin raises at the same message

    def append_all() -> None:
        for m in HISTORY:
            sync_b.append(m)

    with pytest.raises(InvalidInputError, match="misconfigured"):
        append_all()
    assert len(sync_b.transcript()) == len(b.transcript())


def test_sync_extend_keeps_the_rounds_finished_before_the_error() -> None:
    summariser = Summariser(good=2)
    b = buffer(summariser)
    with pytest.raises(InvalidInputError, match="misconfigured"):
        b.extend(HISTORY)
    assert summariser.calls == 3
    assert b.summary is not None
    assert b.summary.startswith("round 2:")
    assert b.folded > 1
    assert [e.kind for e in b.events] == ["summarised"]
    assert b.tokens <= b.budget
    assert b.messages()[0] == HISTORY[0]

    summariser.good = 1_000  # fixed: the next extend folds what is still pending, nothing twice
    kept = b.folded
    b.extend([turn(30)])
    assert not b.degraded
    assert b.folded > kept
    assert b.tokens <= b.budget


async def test_async_extend_keeps_the_rounds_finished_before_the_error() -> None:
    summariser = Summariser(good=2)
    b = buffer(summariser.acall)
    with pytest.raises(InvalidInputError, match="misconfigured"):
        await b.aextend(HISTORY)
    assert summariser.calls == 3
    assert b.summary is not None
    assert b.summary.startswith("round 2:")
    assert b.folded > 1
    assert [e.kind for e in b.events] == ["summarised"]
    assert b.tokens <= b.budget
    assert b.messages()[0] == HISTORY[0]


def test_the_twins_end_in_the_same_state() -> None:
    sync_summariser, async_summariser = Summariser(good=3), Summariser(good=3)
    sync_b, async_b = buffer(sync_summariser), buffer(async_summariser.acall)
    with pytest.raises(InvalidInputError):
        sync_b.extend(HISTORY)

    async def go() -> None:
        await async_b.aextend(HISTORY)

    with pytest.raises(InvalidInputError):
        asyncio.run(go())
    assert (sync_b.summary, sync_b.folded, sync_b.events) == (async_b.summary, async_b.folded, async_b.events)
    assert sync_summariser.calls == async_summariser.calls
