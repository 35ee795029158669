"""Token-budgeted chat histories under a real RunnableWithMessageHistory."""

from __future__ import annotations

import base64
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core._api import LangChainDeprecationWarning
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables.history import RunnableWithMessageHistory
from lc_fakes import (
    RecordingChatModel,
    assert_tool_pairs_intact,
    conversation,
    memory,
    replies,
    system_of,
    tokens,
)

from langchain_tokenbudget import SummaryChatMessageHistory, TokenBudgetChatMessageHistory
from tokenbudget_core import InvalidInputError, TokenBudgetError, UnknownModelError
from tokenbudget_core.counting import PDF_PAGE_TOKENS
from tokenbudget_core.errors import ContextOverflowError

BUDGET = 300
SUMMARY = "Ada from Lyon asked twelve weather questions."
PROMPT = ChatPromptTemplate.from_messages(
    [("system", "You are terse."), MessagesPlaceholder("history"), ("human", "{question}")]
)


def with_history(model: RecordingChatModel, history: BaseChatMessageHistory) -> RunnableWithMessageHistory:
    with pytest.warns(LangChainDeprecationWarning, match="RunnableWithMessageHistory"):  # the host's own
        return RunnableWithMessageHistory(
            PROMPT | model,
            lambda session_id: history,
            input_messages_key="question",
            history_messages_key="history",
        )


def history_part(received: list[BaseMessage]) -> list[BaseMessage]:
    """What the history contributed: between the prompt's system message and the new question."""
    return received[1:-1]


@pytest.fixture
def no_warnings() -> Iterator[None]:
    """Fail on any warning at all, even ones the suite's filters would let through."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


CONFIG: Any = {"configurable": {"session_id": "ada"}}


def test_model_input_is_trimmed_and_the_store_keeps_everything(no_warnings: None) -> None:
    store = memory()
    history = TokenBudgetChatMessageHistory(store, model="gpt-4o", max_tokens=BUDGET, pin_first_user=True)
    model = replies(*[f"Answer {i}: " + "mild and sunny " * 10 for i in range(12)])
    chain = with_history(model, history)
    for i in range(12):
        chain.invoke({"question": f"Question {i}: " + "what about the weather " * 5}, CONFIG)

    assert len(store.messages) == 24  # every question and answer
    assert history.transcript == store.messages
    last = model.received[-1]
    assert tokens(history_part(last)) <= BUDGET < tokens(store.messages[:-2])
    assert history_part(last)[0].content.startswith("Question 0")  # pinned first user message
    assert last[-1].content.startswith("Question 11")
    assert len(history_part(last)) < 22


async def test_async_through_runnable_with_message_history(no_warnings: None) -> None:
    store = memory()
    history = TokenBudgetChatMessageHistory(store, model="gpt-4o", max_tokens=BUDGET)
    model = replies(*["mild and sunny " * 10] * 10)
    chain = with_history(model, history)
    for i in range(10):
        await chain.ainvoke({"question": f"Question {i}: " + "what about the weather " * 5}, CONFIG)
    assert len(store.messages) == 20
    assert tokens(history_part(model.received[-1])) <= BUDGET
    assert len(await history.aget_messages()) < 20
    await history.aclear()
    assert store.messages == []


def test_window_keeps_system_messages_and_tool_pairs(no_warnings: None) -> None:
    log = conversation(20)
    history = TokenBudgetChatMessageHistory(
        memory([SystemMessage("Remember: Celsius."), *log]), model="gpt-4o", max_tokens=BUDGET
    )
    window = history.messages
    assert window[0].content == "Remember: Celsius."
    assert window[-1] is history.history.messages[-1]
    assert_tool_pairs_intact(window)
    assert tokens(window) <= BUDGET


def test_default_store_and_plain_use_emit_no_warning(no_warnings: None) -> None:
    history = TokenBudgetChatMessageHistory(model="gpt-4o", max_tokens=BUDGET)
    history.add_user_message("hello")
    history.add_ai_message("hi")
    assert [m.content for m in history.messages] == ["hello", "hi"]
    history.clear()
    assert history.messages == []
    summary = SummaryChatMessageHistory(summariser=replies("x"), model="gpt-4o", max_tokens=BUDGET)
    summary.add_messages([HumanMessage("hello")])
    assert str(summary) == "Human: hello"


def test_summary_history_under_runnable_with_message_history(no_warnings: None) -> None:
    store, writer = memory(), replies(*[SUMMARY] * 20)
    history = SummaryChatMessageHistory(store, summariser=writer, model="gpt-4o", max_tokens=400)
    model = replies(*[f"Answer {i}: " + "mild and sunny " * 10 for i in range(12)])
    chain = with_history(model, history)
    for i in range(12):
        chain.invoke({"question": f"Question {i}: " + "what about the weather " * 5}, CONFIG)

    assert len(store.messages) == 24
    assert history.summary == SUMMARY
    last = model.received[-1]
    assert SUMMARY in system_of(last)
    assert tokens(history_part(last)) <= 400
    summary, first = history_part(last)[:2]
    assert isinstance(summary, SystemMessage)
    assert summary.content.endswith(SUMMARY)  # the summary comes first in the history...
    assert first.content.startswith("Question 0")  # ...then the pinned first user message
    assert any(e.kind == "summarised" for e in history.events)
    assert "running summary" in str(writer.received[0][0].content)  # the core's prompt


async def test_summary_history_async_awaits_the_summariser(no_warnings: None) -> None:
    class AsyncOnly(RecordingChatModel):
        def _generate(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("the async path must not call the sync model")

        async def _agenerate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
            self.received.append(list(messages))
            return RecordingChatModel._generate(self, messages, *args, **kwargs)

    store, writer = memory(), AsyncOnly(messages=iter([SUMMARY] * 20))
    history = SummaryChatMessageHistory(store, summariser=writer, model="gpt-4o", max_tokens=400)
    model = replies(*["mild and sunny " * 10] * 12)
    chain = with_history(model, history)
    for i in range(12):
        await chain.ainvoke({"question": f"Question {i}: " + "what about the weather " * 5}, CONFIG)
    assert writer.received
    assert history.summary == SUMMARY
    assert SUMMARY in system_of(model.received[-1])


def test_summary_history_replays_an_existing_store_and_follows_outside_writes(no_warnings: None) -> None:
    store = memory(conversation(12))
    history = SummaryChatMessageHistory(
        store, summariser=replies(*[SUMMARY] * 20), model="gpt-4o", max_tokens=400, pin_first_user=False
    )
    window = history.messages
    assert window[0].content.endswith(SUMMARY)
    assert window[-1] is store.messages[-1]
    assert_tool_pairs_intact(window[1:])
    store.add_messages([HumanMessage("Written by another process")])
    assert history.messages[-1].content == "Written by another process"
    store.clear()
    assert history.messages == []
    assert history.summary is None


def test_a_shared_history_cleared_and_refilled_elsewhere_drops_the_old_summary(no_warnings: None) -> None:
    """Another worker resets the backing history and writes a new conversation at least as long:
    the old conversation's summary and pinned message must not leak into the new one's window."""
    store = memory([HumanMessage("I am Alice, card ending 1234. " + "x " * 40), AIMessage("ok " * 40)] * 2)
    history = SummaryChatMessageHistory(
        store, summariser=replies(*[SUMMARY] * 20), model="gpt-4o", max_tokens=200
    )
    assert history.messages[0].content.endswith(SUMMARY)
    store.clear()
    bob = ["I am Bob.", "hello Bob", "what's my name?", "Bob", "thanks", "np"]
    store.add_messages([(HumanMessage if i % 2 == 0 else AIMessage)(t) for i, t in enumerate(bob)])
    assert [m.content for m in history.messages] == bob
    assert history.summary is None


def test_a_failing_summariser_falls_back_to_the_window(no_warnings: None) -> None:
    class Broken(RecordingChatModel):
        def _generate(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("down")

    history = SummaryChatMessageHistory(
        memory(conversation(12)), summariser=Broken(messages=iter([])), model="gpt-4o", max_tokens=400
    )
    window = history.messages
    assert history.summary is None
    assert tokens(window) <= 400
    assert history.events[-1].kind == "failed"
    assert "RuntimeError: down" in history.events[-1].detail


# -- bad input ---------------------------------------------------------------------------------


def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(InvalidInputError, match="history"):
        TokenBudgetChatMessageHistory([], model="gpt-4o", max_tokens=100)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="max_tokens"):
        TokenBudgetChatMessageHistory(model="gpt-4o", max_tokens=0)
    with pytest.raises(UnknownModelError):
        TokenBudgetChatMessageHistory(model="gpt-5-turbo-ultra", max_tokens=100)
    with pytest.raises(InvalidInputError, match="summariser"):
        SummaryChatMessageHistory(summariser="gpt-4o", model="gpt-4o", max_tokens=100)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="summary_tokens"):
        SummaryChatMessageHistory(summariser=replies(), model="gpt-4o", max_tokens=100, summary_tokens=100)
    for history in (
        TokenBudgetChatMessageHistory(model="gpt-4o", max_tokens=100),
        SummaryChatMessageHistory(summariser=replies(), model="gpt-4o", max_tokens=100),
    ):
        for bad, field in (
            (None, "messages"),
            ("hello", "messages"),
            ([HumanMessage("hi"), 5], "messages[1]"),
        ):
            with pytest.raises(InvalidInputError) as info:
                history.add_messages(bad)  # type: ignore[arg-type]
            assert info.value.field == field
        assert history.transcript == []


def test_overflow_on_read_is_a_token_budget_error() -> None:
    history = TokenBudgetChatMessageHistory(
        memory([HumanMessage("word " * 300)]), model="gpt-4o", max_tokens=50
    )
    with pytest.raises(ContextOverflowError) as info:
        history.messages
    assert isinstance(info.value, TokenBudgetError)
    assert isinstance(info.value, ValueError)
    truncating = TokenBudgetChatMessageHistory(
        history.history, model="gpt-4o", max_tokens=50, on_overflow="truncate"
    )
    [kept] = truncating.messages
    assert tokens([kept]) <= 50
    assert isinstance(kept, HumanMessage)
    assert len(history.transcript[0].content) > len(kept.content)


PDF_PAGE = b"%PDF-1.4\n1 0 obj <</Type /Pages /Count 1>>\n2 0 obj <</Type /Page>>\n"


def test_a_pdf_in_the_history_is_counted_by_its_estimate_and_kept_whole() -> None:
    pdf = {"type": "file", "base64": base64.b64encode(PDF_PAGE).decode(), "mime_type": "application/pdf"}
    question = HumanMessage(content=[{"type": "text", "text": "What does this say?"}, pdf])
    budget = PDF_PAGE_TOKENS + 200
    for history in (
        TokenBudgetChatMessageHistory(model="gpt-4o", max_tokens=budget),
        SummaryChatMessageHistory(
            summariser=replies("Earlier: weather."), model="gpt-4o", max_tokens=PDF_PAGE_TOKENS + 1_700
        ),
    ):
        history.add_messages([HumanMessage("weather " * 300), AIMessage("sunny " * 300), question])
        kept = history.messages
        assert kept[-1] is question  # the PDF block itself, never cut
        assert all(m.content != "sunny " * 300 for m in kept)  # an old turn made room for its estimate
