"""SummaryChatMessageHistory rebuilt over a stored transcript (the usual per-request
``RunnableWithMessageHistory`` factory) folds what slid out in ``chunk_tokens`` chunks, not one
summariser call per old turn; the window stays within budget, system kept, tool pairs intact."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from langchain_core._api import suppress_langchain_deprecation_warning
from langchain_core.chat_history import InMemoryChatMessageHistory
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatResult

from langchain_tokenbudget import SummaryChatMessageHistory
from langchain_tokenbudget.messages import to_countable_message
from tokenbudget_core.counting import resolve_counter
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.summary import SummaryBuffer

BUDGET = 400
SUMMARY = "The user asked about tea and the weather."


class CountingWriter(GenericFakeChatModel):
    """A fake summariser that counts its calls (async calls run ``_generate`` too)."""

    calls: int = 0

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        self.calls += 1
        return super()._generate(*args, **kwargs)


def writer() -> CountingWriter:
    return CountingWriter(messages=iter([AIMessage(SUMMARY)] * 1_000))


def store(turns: int) -> InMemoryChatMessageHistory:
    messages: list[BaseMessage] = [SystemMessage("SYSTEM RULES: answer in French.")]
    for t in range(turns):
        messages.append(HumanMessage(f"q{t} " + "tea " * 40))
        if t % 5 == 2:  # a tool pair now and then
            messages.append(AIMessage("", tool_calls=[{"name": "lookup", "args": {"t": t}, "id": f"c{t}"}]))
            messages.append(ToolMessage(f"result {t} " + "leaf " * 20, tool_call_id=f"c{t}"))
        messages.append(AIMessage(f"a{t} " + "noted " * 40))
    with suppress_langchain_deprecation_warning():
        return InMemoryChatMessageHistory(messages=messages)


def tokens(messages: Sequence[BaseMessage]) -> int:
    return resolve_counter("gpt-4o").count_messages([to_countable_message(m) for m in messages])


def assert_window_ok(window: Sequence[BaseMessage], history: SummaryChatMessageHistory) -> None:
    assert tokens(window) <= BUDGET
    assert isinstance(window[0], SystemMessage)
    assert window[0].content == "SYSTEM RULES: answer in French."
    assert history.summary == SUMMARY
    assert any(isinstance(m, SystemMessage) and SUMMARY in str(m.content) for m in window)
    for i, m in enumerate(window):  # every tool result right after its call, every call answered
        if isinstance(m, ToolMessage):
            prev = window[i - 1]
            assert isinstance(prev, AIMessage)
            assert m.tool_call_id in {c["id"] for c in prev.tool_calls}
        if isinstance(m, AIMessage) and m.tool_calls:
            assert isinstance(window[i + 1], ToolMessage)
    assert not any(e.kind == "failed" for e in history.events)


def test_a_rebuilt_history_folds_the_old_turns_in_chunks_not_one_call_per_turn() -> None:
    backing = store(30)
    summariser = writer()
    history = SummaryChatMessageHistory(backing, summariser=summariser, model="gpt-4o", max_tokens=BUDGET)
    window = history.messages
    # ~30 turns of ~45 tokens slid out: a few thousand tokens, within one 4,000-token chunk or two
    assert 1 <= summariser.calls <= 3, summariser.calls
    assert_window_ok(window, history)
    persistent = SummaryChatMessageHistory(summariser=writer(), model="gpt-4o", max_tokens=BUDGET)
    persistent.add_messages(backing.messages)  # the same window as an object that saw every turn
    assert [m.content for m in window] == [m.content for m in persistent.messages]

    before = summariser.calls  # the request's new turn: at most one more fold
    history.add_messages([HumanMessage("q30 " + "tea " * 40), AIMessage("a30 " + "noted " * 40)])
    assert summariser.calls - before <= 1
    assert_window_ok(history.messages, history)


async def test_a_rebuilt_history_folds_in_chunks_async_too() -> None:
    backing = store(30)
    summariser = writer()
    history = SummaryChatMessageHistory(backing, summariser=summariser, model="gpt-4o", max_tokens=BUDGET)
    window = await history.aget_messages()
    assert 1 <= summariser.calls <= 3, summariser.calls
    assert_window_ok(window, history)
    before = summariser.calls
    await history.aadd_messages([HumanMessage("q30 " + "tea " * 40), AIMessage("a30 " + "noted " * 40)])
    assert summariser.calls - before <= 1
    assert_window_ok(await history.aget_messages(), history)


def test_per_request_objects_cost_a_few_calls_each_over_a_conversation() -> None:
    """The factory makes a new object per request over one store: 20 requests pay a few calls each."""
    backing = store(0)
    summariser = writer()
    per_request = []
    for t in range(20):
        history = SummaryChatMessageHistory(backing, summariser=summariser, model="gpt-4o", max_tokens=BUDGET)
        before = summariser.calls
        history.messages
        history.add_messages([HumanMessage(f"q{t} " + "tea " * 40), AIMessage(f"a{t} " + "noted " * 40)])
        per_request.append(summariser.calls - before)
        assert tokens(history.messages) <= BUDGET
    assert max(per_request) <= 3, per_request


class FailsOnce(CountingWriter):
    """Raises InvalidInputError (a misconfiguration) on its first call, then summarises."""

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        if self.calls == 0:
            self.calls += 1
            raise InvalidInputError("summariser", "misconfigured")
        return super()._generate(*args, **kwargs)


def test_a_summariser_programming_error_surfaces_and_no_message_is_taken_in_twice() -> None:
    backing = store(30)
    summariser = FailsOnce(messages=iter([AIMessage(SUMMARY)] * 1_000))
    history = SummaryChatMessageHistory(backing, summariser=summariser, model="gpt-4o", max_tokens=BUDGET)
    with pytest.raises(InvalidInputError, match="misconfigured"):
        history.messages
    window = history.messages  # the fold runs again; the messages already taken in are not re-added
    assert_window_ok(window, history)
    ids = [id(m) for m in window if not (isinstance(m, SystemMessage) and SUMMARY in str(m.content))]
    assert len(ids) == len(set(ids))
    buffer: SummaryBuffer[Any] = history._buffer
    assert len(buffer.transcript()) == len(backing.messages)
