"""``TokenBudgetChatMessageHistory`` reads a growing conversation in work bounded by its window
(each backing message converted and counted once; only the messages the window can reach are
fitted) and answers exactly what fitting the whole transcript answers: a differential check
against the core's ``fit_messages`` over every message, through real LangChain messages (tool
calls and their results, system messages in the middle, pinned first user messages, both
overflow modes), including a backing history cleared and refilled behind its back.

Before, every read converted and fitted the whole transcript: about 12 ms a turn at 4,000
messages against 1.4 ms at the start, growing without bound."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from lc_fakes import memory

from langchain_tokenbudget import TokenBudgetChatMessageHistory
from langchain_tokenbudget._bridge import Budget, fit_host
from tokenbudget_core.errors import ContextOverflowError
from tokenbudget_core.transcript_fit import TranscriptFit


def turn(rng: random.Random, i: int) -> list[BaseMessage]:
    r = rng.random()
    if r < 0.12:
        call = {"name": "lookup", "args": {"q": str(i)}, "id": f"call-{i}", "type": "tool_call"}
        return [
            AIMessage("", tool_calls=[call]),
            ToolMessage("result " * rng.randint(1, 40), tool_call_id=f"call-{i}"),
        ]
    if r < 0.16:
        return [SystemMessage("note " * rng.randint(1, 8))]
    text = "word " * rng.randint(1, 80)
    return [HumanMessage(text) if rng.random() < 0.55 else AIMessage(text)]


def whole_fit(history: TokenBudgetChatMessageHistory) -> list[BaseMessage] | str:
    """What fitting every message of the backing history gives (the old read)."""
    try:
        return fit_host(history.history.messages, history.budget, tools=history.tools)
    except ContextOverflowError:
        return "overflow"


def read(history: TokenBudgetChatMessageHistory) -> list[BaseMessage] | str:
    try:
        return history.messages
    except ContextOverflowError:
        return "overflow"


@pytest.mark.parametrize("seed", range(6))
def test_every_read_is_the_fit_of_the_whole_transcript(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(6):
        backing = memory()
        history = TokenBudgetChatMessageHistory(
            backing,
            model="gpt-4o",
            max_tokens=rng.choice([120, 300, 900]),
            pin_first_user=rng.random() < 0.5,
            on_overflow=rng.choice(["raise", "truncate"]),
        )
        for i in range(rng.randint(1, 80)):
            history.add_messages(turn(rng, i))
            if rng.random() < 0.4:
                got, want = read(history), whole_fit(history)
                assert got == want
            if rng.random() < 0.03:  # another worker clears the shared backing history and refills it
                backing.clear()
                backing.add_messages([HumanMessage("Written by another worker " * rng.randint(1, 5))])
        assert read(history) == whole_fit(history)


def test_the_window_reaches_only_the_newest_messages_of_a_long_conversation() -> None:
    history = TokenBudgetChatMessageHistory(model="gpt-4o", max_tokens=500, pin_first_user=True)
    history.add_messages([SystemMessage("Be brief.")])
    for i in range(3_000):
        history.add_messages([HumanMessage(f"question {i} " * 10), AIMessage(f"answer {i} " * 10)])
    window = history.messages
    assert window == fit_host(history.history.messages, history.budget)
    budget: Budget = history.budget
    reach: TranscriptFit[object] = history._transcript  # type: ignore[assignment]
    assert len(reach) == 6_001  # every message told once
    assert len(reach.candidates(budget.max_tokens, pin_first_user=True)) < 40


class CopyingHistory(BaseChatMessageHistory):
    """A backing history that hands back copies on every read, as a database-backed one does."""

    def __init__(self) -> None:
        self.kept: list[BaseMessage] = []

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        return [m.model_copy() for m in self.kept]

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        self.kept.extend(messages)

    def clear(self) -> None:
        self.kept = []


@pytest.mark.parametrize("backing_kind", ["in-memory", "copies"])
def test_a_backing_history_changed_in_the_middle_is_read_again(backing_kind: str) -> None:
    """Re-review s24 F3: a turn removed in the middle and a new one appended (the same length),
    or a message replaced, left the window of the transcript as it was before."""
    backing: Any = memory() if backing_kind == "in-memory" else CopyingHistory()
    history = TokenBudgetChatMessageHistory(backing, model="gpt-4o", max_tokens=2_000)
    history.add_messages(
        [SystemMessage("Be brief."), HumanMessage("my card is 4111"), AIMessage("OK."), HumanMessage("next?")]
    )
    assert [m.content for m in history.messages][1] == "my card is 4111"
    store = backing.messages if backing_kind == "in-memory" else backing.kept
    store[1] = HumanMessage("my card is [REDACTED]")  # replaced by a new message
    assert [m.content for m in history.messages] == ["Be brief.", "my card is [REDACTED]", "OK.", "next?"]
    del store[1:3]  # a turn removed in the middle...
    store.extend([AIMessage("OK."), HumanMessage("and?")])  # ...and two appended: as long as before
    assert [m.content for m in history.messages] == ["Be brief.", "next?", "OK.", "and?"]
    assert history.messages == fit_host(backing.messages, history.budget)
