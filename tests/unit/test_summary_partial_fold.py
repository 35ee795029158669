"""A fold whose later round fails keeps the rounds it paid for (SummaryBuffer)."""

from __future__ import annotations

import asyncio

import pytest

from tokenbudget_core.messages import Message
from tokenbudget_core.summary import SummaryBuffer


def _turn(i: int) -> dict[str, str]:
    refused = "REFUSED " if i == 12 else ""
    return {
        "role": "user" if i % 2 == 0 else "assistant",
        "content": f"turn {i:02d} {refused}" + "words " * 60,
    }


class _Summariser:
    """Summarises each chunk, refusing any chunk that holds the REFUSED turn (a content filter)."""

    def __init__(self) -> None:
        self.chunks: list[str] = []

    def __call__(self, previous: str | None, messages: list[Message]) -> str:
        self.chunks.append(str(messages[0].content)[:7])
        if any("REFUSED" in str(m.content) for m in messages):
            raise RuntimeError("content filter")
        return f"{previous or ''} [{len(messages)} messages]".strip()


def _buffer(summariser: _Summariser) -> SummaryBuffer[dict[str, str]]:
    return SummaryBuffer(summariser, "gpt-4o", max_tokens=3000, chunk_tokens=800, low_water=0.5)


def _check(summariser: _Summariser, buffer: SummaryBuffer[dict[str, str]]) -> None:
    # the chunk before the refused one (turn 00 is pinned) was summarised (paid) once
    first = summariser.chunks[0]
    assert first == "turn 01"
    assert summariser.chunks.count(first) == 1
    assert buffer.summary is not None
    assert buffer.folded > 0
    assert buffer.last_error == "RuntimeError: content filter"
    kinds = [e.kind for e in buffer.events]
    assert kinds.index("summarised") < kinds.index("failed")
    # every later turn retries only from the refused chunk on, never the chunks before it
    assert set(summariser.chunks[1:]) == {"turn 12"}


def test_a_failed_round_keeps_the_rounds_before_it() -> None:
    summariser = _Summariser()
    buffer = _buffer(summariser)
    for i in range(40):
        buffer.append(_turn(i))
    _check(summariser, buffer)


def test_a_failed_round_keeps_the_rounds_before_it_async() -> None:
    summariser = _Summariser()
    buffer = _buffer(summariser)

    async def run() -> None:
        for i in range(40):
            await buffer.aappend(_turn(i))

    asyncio.run(run())
    _check(summariser, buffer)


@pytest.mark.parametrize("method", ["extend", "aextend"])
def test_extend_stops_at_the_failure(method: str) -> None:
    summariser = _Summariser()
    buffer = _buffer(summariser)
    turns = [_turn(i) for i in range(40)]
    if method == "extend":
        buffer.extend(turns)
    else:
        asyncio.run(buffer.aextend(turns))
    # one fold: the chunks up to the refused one, each sent once, the refused one once
    assert len(summariser.chunks) == len(set(summariser.chunks))
    assert buffer.summary is not None
    assert buffer.degraded
