"""LangChain's ``SummaryChatMessageHistory(ledger=)`` acts on the ladder's ``smaller_context`` step
(issue 4, section 6): a payer past the step gets the summary plus the recent turns that fit
``context_share`` of the budget, every other payer the whole window; a read never calls the
summariser, and under ``RunnableWithMessageHistory`` (which reads ``messages`` twice per run and
tells new messages from old by length) an unchanged history reads alike. Before, it took no
ledger. Real LangChain histories and runs, a real memory ledger."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables.history import RunnableWithMessageHistory
from lc_fakes import RecordingChatModel, assert_tool_pairs_intact, conversation, memory, tokens

from langchain_tokenbudget import BudgetCallbackHandler, SummaryChatMessageHistory
from tokenbudget_core import Usage, attribute
from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger

BUDGET = 600


def book(limit: int = 1_000) -> Ledger:
    return Ledger(
        "memory://", policy=BudgetPolicy(features={"support": FeatureBudget(user_daily_tokens=limit)})
    )


def spend(ledger: Ledger, user: str, used: int = 800) -> None:
    ledger.record(Usage(input_tokens=used), model="gpt-4o", feature="support", user=user)
    assert ledger.state(feature="support", user=user).step == "smaller_context"


class CountingWriter(RecordingChatModel):
    """The summariser: each call it answers is one summary written."""


def writer() -> CountingWriter:
    return CountingWriter(messages=iter([AIMessage("Ada in Lyon asked about the weather.")] * 1_000))


def history(
    ledger: Ledger | None, user: str | None, stored: list[BaseMessage], summariser: Any = None
) -> Any:
    payer = {} if ledger is None else {"ledger": ledger, "feature": "support", "user": user}
    return SummaryChatMessageHistory(
        memory(stored), summariser=summariser or writer(), model="gpt-4o", max_tokens=BUDGET, **payer
    )


def transcript() -> list[BaseMessage]:
    return [SystemMessage("You are a weather bot."), *conversation(20)]


def test_a_payer_past_smaller_context_gets_the_summary_and_fewer_recent_turns() -> None:
    ledger, stored = book(), transcript()
    whole = history(None, None, stored).messages
    summariser = writer()
    ada = history(ledger, "ada", stored, summariser)
    bob = history(ledger, "bob", stored)
    assert ada.messages == whole == bob.messages
    assert ada.summary is not None
    written = len(summariser.received)

    spend(ledger, "ada")
    ada.add_messages([HumanMessage("and tomorrow?")])  # a new turn: the ledger is asked again
    smaller = ada.messages

    room = int(BUDGET * ledger.policy.ladder.context_share)
    assert tokens(smaller) <= room
    assert tokens(history(None, None, [*stored, HumanMessage("and tomorrow?")]).messages) > room
    assert isinstance(smaller[0], SystemMessage)
    assert ada.summary in str(smaller[1].content)  # the summary is kept
    assert smaller[-1].content == "and tomorrow?"
    assert_tool_pairs_intact(smaller)
    assert bob.messages == whole  # another payer: the whole window
    with attribute(feature="support", user="ada"):  # the enclosing payer wins over user="bob"
        bob.add_messages([HumanMessage("and tomorrow?")])
        assert tokens(bob.messages) <= room
    assert asyncio.run(ada.aget_messages()) == smaller
    assert len(summariser.received) - written <= 1  # reads fold nothing (the new turn may)


def test_a_cleared_history_asks_the_ledger_again() -> None:
    ledger, stored = book(), transcript()
    ada = history(ledger, "ada", stored)
    whole = ada.messages
    spend(ledger, "ada")
    assert ada.messages == whole  # unchanged since the last read: the same window
    ada.clear()
    ada.add_messages(stored)
    assert len(ada.messages) < len(whole)


@pytest.mark.parametrize("use_async", [False, True])
def test_runnable_with_message_history_appends_only_the_new_turn_when_the_step_moves(use_async: bool) -> None:
    ledger = book(limit=10_000)
    # 60%: the first read's summaries (charged to the payer) leave it below smaller_context (75%),
    # the run's own charge takes it past: the second read must not move the window
    ledger.record(Usage(input_tokens=6_000), model="gpt-4o", feature="support", user="ada")
    backing = memory(transcript())
    stored = len(backing.messages)
    usage = {"input_tokens": 1_000, "output_tokens": 5, "total_tokens": 1_005}
    model = RecordingChatModel(messages=iter([AIMessage("sure", usage_metadata=usage)]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RunnableWithMessageHistory is deprecated, still used
        chain = RunnableWithMessageHistory(
            model,
            lambda session_id: SummaryChatMessageHistory(
                backing,
                summariser=writer(),
                model="gpt-4o",
                max_tokens=BUDGET,
                ledger=ledger,
                feature="support",
                user="ada",
            ),
        )
    config: Any = {
        "configurable": {"session_id": "s"},
        "callbacks": [BudgetCallbackHandler(ledger, model="gpt-4o", max_output_tokens=50)],
        "metadata": {"feature": "support", "user": "ada"},
    }
    step = ledger.state(feature="support", user="ada").step
    question = HumanMessage("new question")
    if use_async:
        asyncio.run(chain.ainvoke([question], config=config))
    else:
        chain.invoke([question], config=config)
    assert ledger.state(feature="support", user="ada").step != step  # the run's charge moved it
    assert [m.content for m in backing.messages[stored:]] == ["new question", "sure"]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"ledger": "memory://"}, "ledger"),
        ({"user": "ada"}, "user"),
        ({"ledger": Ledger("memory://"), "feature": ""}, "feature"),
    ],
)
def test_bad_ledger_options_are_named(options: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        SummaryChatMessageHistory(summariser=writer(), model="gpt-4o", max_tokens=BUDGET, **options)
    assert caught.value.field == field
