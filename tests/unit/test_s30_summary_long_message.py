"""A message too long for the summarising memories' window (a pasted log, a long paid answer) no
longer sticks the session for good: ``SummaryChatMessageHistory`` and
``ContextWindowMiddleware(strategy="summarise")`` take it (``hold_overflow``), raise only while it is
the newest, and once a newer message follows it slides out and is folded into the summary (before:
every later read re-fed it and raised ``ContextOverflowError``, sync and async)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core._api import suppress_langchain_deprecation_warning
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatResult
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables.history import RunnableWithMessageHistory
from pydantic import Field

from langchain_tokenbudget import ContextWindowMiddleware, SummaryChatMessageHistory
from tokenbudget_core.errors import ContextOverflowError
from tokenbudget_core.summary import SummaryBuffer

LOG = "LOG: " + "ERROR disk full at node-7\n" * 150  # about 1,500 tokens
SUMMARY = "The user shared a disk log (node-7 full)."


class Recording(GenericFakeChatModel):
    """A fake chat model that records every input it received (sync and async calls)."""

    received: list[list[BaseMessage]] = Field(default_factory=list)

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Recording:
        return self

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        self.received.append(list(messages))
        return super()._generate(messages, *args, **kwargs)


def always(text: str) -> Recording:
    # a new message each call: one repeated object keeps the id of its first use, and the
    # agent state would merge the next reply into it
    return Recording(messages=(AIMessage(text) for _ in itertools.count()))


def saw_log(model: Recording) -> bool:
    return any(
        "node-7" in str(m.content) and len(str(m.content)) > 1_000 for call in model.received for m in call
    )


def sent_log(received: list[BaseMessage]) -> bool:
    return any(str(m.content) == LOG or str(m.content).startswith("please read this log:") for m in received)


# -- SummaryChatMessageHistory, direct use ---------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_history_recovers_once_a_newer_turn_follows_the_long_message(mode: str) -> None:
    writer = always(SUMMARY)
    history = SummaryChatMessageHistory(summariser=writer, model="gpt-4o", max_tokens=600)

    def add(messages: list[BaseMessage]) -> None:
        if mode == "sync":
            history.add_messages(messages)
        else:
            asyncio.run(history.aadd_messages(messages))

    def read() -> list[BaseMessage]:
        return history.messages if mode == "sync" else asyncio.run(history.aget_messages())

    add([SystemMessage("You are terse."), HumanMessage("hi"), AIMessage("hello")])
    add([HumanMessage("please read this log"), AIMessage(LOG)])  # saved: the reply was paid for
    with pytest.raises(ContextOverflowError):  # the newest message alone cannot be sent
        read()
    for turn in range(3):
        add([HumanMessage(f"short question {turn}"), AIMessage(f"short answer {turn}")])
        window = read()
        assert window[-1].content == f"short answer {turn}"
        assert all(m.content != LOG for m in window)
        assert window[0].content == "You are terse."
    assert history.summary == SUMMARY
    assert saw_log(writer)  # the long reply was folded, not dropped
    assert len(history.transcript) == 11  # the backing history keeps every message
    assert not [e for e in history.events if e.kind == "failed"]


def test_history_a_middle_message_too_long_in_one_add_is_folded_at_once() -> None:
    writer = always(SUMMARY)
    history = SummaryChatMessageHistory(summariser=writer, model="gpt-4o", max_tokens=600)
    history.add_messages(
        [
            HumanMessage("hi"),
            AIMessage("hello"),
            HumanMessage("read this"),
            AIMessage(LOG),
            HumanMessage("and?"),
        ]
    )
    window = history.messages
    assert window[-1].content == "and?"
    assert all(m.content != LOG for m in window)
    assert history.summary == SUMMARY
    assert saw_log(writer)


# -- through RunnableWithMessageHistory (the documented host) ---------------------------------------

PROMPT = ChatPromptTemplate.from_messages(
    [("system", "You are terse."), MessagesPlaceholder("history"), ("human", "{q}")]
)
QUESTIONS = ["hi", "please read this log: " + LOG, "what was the node?", "thanks", "bye"]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_runnable_with_message_history_keeps_answering_after_a_pasted_log(mode: str) -> None:
    model, writer = always("Here is what the log says."), always(SUMMARY)
    history = SummaryChatMessageHistory(summariser=writer, model="gpt-4o", max_tokens=800)
    with suppress_langchain_deprecation_warning():
        chain = RunnableWithMessageHistory(
            PROMPT | model, lambda session_id: history, input_messages_key="q", history_messages_key="history"
        )
    config: Any = {"configurable": {"session_id": "s"}}
    for q in QUESTIONS:
        if mode == "sync":
            chain.invoke({"q": q}, config)
        else:
            asyncio.run(chain.ainvoke({"q": q}, config))
    assert len(model.received) == len(QUESTIONS)  # every turn reached the model
    assert len(history.transcript) == 2 * len(QUESTIONS)  # every turn was saved
    later = model.received[2:]
    assert all(not sent_log(call[1:-1]) for call in later)  # the log left the history part
    assert history.summary == SUMMARY
    assert saw_log(writer)
    assert asyncio.run(history.aget_messages())[-1].content == "Here is what the log says."


# -- create_agent + ContextWindowMiddleware(strategy="summarise") -----------------------------------

THREAD: list[BaseMessage] = [
    HumanMessage("hi"),
    AIMessage("hello"),
    HumanMessage("please read this log"),
    AIMessage(LOG),
    HumanMessage("thanks, and what should I do now?"),
]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_agent_thread_with_an_old_long_answer_is_answered_and_the_answer_folded(mode: str) -> None:
    model, writer = always("Free some disk space."), always(SUMMARY)
    middleware = ContextWindowMiddleware("gpt-4o", max_tokens=1_000, strategy="summarise", summariser=writer)
    agent = create_agent(model, middleware=[middleware])

    def run(messages: list[BaseMessage]) -> Any:
        state: Any = {"messages": messages}
        if mode == "sync":
            return agent.invoke(state)
        return asyncio.run(agent.ainvoke(state))

    out = run(list(THREAD))
    assert out["messages"][-1].content == "Free some disk space."
    assert out["tokenbudget_summary"] == SUMMARY
    assert saw_log(writer)
    [sent] = model.received
    assert all(m.content != LOG for m in sent)
    assert sent[-1].content == THREAD[-1].content
    again = run([*out["messages"], HumanMessage("and after that?")])  # the thread goes on
    assert again["messages"][-1].content == "Free some disk space."


def test_agent_still_refuses_a_newest_message_that_cannot_fit() -> None:
    model, writer = always("never"), always(SUMMARY)
    middleware = ContextWindowMiddleware("gpt-4o", max_tokens=1_000, strategy="summarise", summariser=writer)
    agent = create_agent(model, middleware=[middleware])
    with pytest.raises(ContextOverflowError):
        agent.invoke({"messages": [HumanMessage("hi"), AIMessage("hello"), HumanMessage(LOG)]})
    assert model.received == []


# -- the core buffer the adapters build ------------------------------------------------------------


def test_core_buffer_with_hold_overflow_takes_a_long_middle_message_in_one_extend() -> None:
    seen: list[str] = []

    def summariser(previous: str | None, messages: list[Any]) -> str:
        seen.extend(m.text for m in messages)
        return SUMMARY

    buffer: SummaryBuffer[dict[str, Any]] = SummaryBuffer(
        summariser, "gpt-4o", max_tokens=600, first_user="summarise", hold_overflow=True
    )
    buffer.extend(
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": LOG},
            {"role": "user", "content": "and?"},
        ]
    )
    assert [m["content"] for m in buffer.messages()][-1] == "and?"
    assert LOG in seen
    assert buffer.summary == SUMMARY
    assert not buffer.degraded
