"""SummaryBuffer.extend / aextend with a message refused part-way: the messages before it are taken
in and what they pushed out of the window is folded into the summary before the error, as appending
them one by one does (before: taken in, slid out, and in no summary until the next append)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tokenbudget_core.errors import ContextOverflowError
from tokenbudget_core.messages import Message
from tokenbudget_core.summary import SummaryBuffer


def turn(i: int) -> dict[str, Any]:
    return {"role": "user" if i % 2 == 0 else "assistant", "content": f"fact {i}: " + "detail " * 30}


class Recorder:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, previous: str | None, messages: list[Message]) -> str:
        facts = [m.text.split(":")[0] for m in messages]
        self.seen += facts
        return ((previous + "; ") if previous else "") + ", ".join(facts)


def buffer(summariser: Recorder) -> SummaryBuffer[dict[str, Any]]:
    return SummaryBuffer(summariser, "gpt-4o", max_tokens=600, first_user="summarise")


@pytest.mark.parametrize("how", ["extend", "aextend", "append one by one"])
def test_what_slid_out_before_a_refused_message_is_folded_before_the_error(how: str) -> None:
    summariser = Recorder()
    memory = buffer(summariser)
    turns = [turn(i) for i in range(12)]
    too_big = {"role": "user", "content": "huge " * 5_000}

    def feed() -> None:
        if how == "extend":
            memory.extend([*turns, too_big])
        elif how == "aextend":
            asyncio.run(memory.aextend([*turns, too_big]))
        else:
            for m in [*turns, too_big]:
                memory.append(m)

    with pytest.raises(ContextOverflowError):
        feed()
    assert not memory.degraded  # nothing slid out is waiting outside the summary
    verbatim = {m["content"].split(":")[0] for m in memory.messages() if m["content"].startswith("fact")}
    assert set(summariser.seen) | verbatim == {f"fact {i}" for i in range(12)}
    assert set(summariser.seen)
    assert not set(summariser.seen) & verbatim
