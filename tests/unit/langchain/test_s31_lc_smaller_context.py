"""The ladder's ``smaller_context`` step acted on by the LangChain adapters given ``ledger=``:
``TokenBudgetChatMessageHistory`` and ``ContextWindowMiddleware(strategy="trim")`` send a payer
past that step ``context_share`` of their budget (fewer old turns), other payers the whole one."""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from lc_fakes import (
    WEATHER_TOOL,
    RecordingChatModel,
    assert_tool_pairs_intact,
    conversation,
    get_weather,
    memory,
    replies,
    tokens,
    weather_call,
)

from langchain_tokenbudget import ContextWindowMiddleware, TokenBudgetChatMessageHistory
from tokenbudget_core import Usage, attribute
from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger

SYSTEM = "You are a weather bot. Answer in one sentence."
BUDGET = 600
LIMIT = 1_000  # each user's daily tokens on the "support" feature


def ledger() -> Ledger:
    return Ledger(
        "memory://", policy=BudgetPolicy(features={"support": FeatureBudget(user_daily_tokens=LIMIT)})
    )


def spend(ledger: Ledger, user: str, tokens_used: int = 800) -> None:
    """Commit real usage, taking the user's tightest budget past the ladder's smaller_context."""
    held = ledger.reserve(
        model="gpt-4o", input_tokens=tokens_used, max_output_tokens=10, feature="support", user=user
    )
    ledger.commit(held, Usage(input_tokens=tokens_used, output_tokens=0))
    share = tokens_used / LIMIT
    assert ledger.policy.ladder.smaller_context is not None
    assert ledger.policy.ladder.smaller_context <= share < ledger.policy.ladder.cache_only  # type: ignore[operator]
    assert ledger.state(feature="support", user=user).step == "smaller_context"


def transcript() -> list[BaseMessage]:
    return [SystemMessage(SYSTEM), *conversation(20)]


def history_for(book: Ledger, user: str, stored: list[BaseMessage]) -> TokenBudgetChatMessageHistory:
    return TokenBudgetChatMessageHistory(
        memory(stored),
        model="gpt-4o",
        max_tokens=BUDGET,
        pin_first_user=True,
        ledger=book,
        feature="support",
        user=user,
    )


def check_kept(window: list[BaseMessage], stored: list[BaseMessage], budget: int) -> None:
    assert tokens(window) <= budget
    assert isinstance(window[0], SystemMessage)
    assert window[1] is stored[1]  # the first user message, pinned
    assert window[-1] is stored[-1]  # the newest turn
    assert_tool_pairs_intact(window)
    assert all(any(m is s for s in stored) for m in window)


def small_room(book: Ledger) -> int:
    return int(BUDGET * book.policy.ladder.context_share)


# -- TokenBudgetChatMessageHistory -----------------------------------------------------------------


def test_history_shrinks_for_a_payer_past_smaller_context_only() -> None:
    book, stored = ledger(), transcript()
    plain = TokenBudgetChatMessageHistory(
        memory(stored), model="gpt-4o", max_tokens=BUDGET, pin_first_user=True
    )
    ada, bob = history_for(book, "ada", stored), history_for(book, "bob", stored)
    whole = plain.messages
    assert ada.messages == whole
    assert bob.messages == whole
    assert tokens(whole) > small_room(book)

    spend(book, "ada")
    assert ada.messages == whole  # the history has not changed since the last read: same window
    smaller = history_for(book, "ada", stored).messages  # the next request's history
    check_kept(smaller, stored, small_room(book))
    assert len(smaller) < len(whole)
    assert history_for(book, "bob", stored).messages == whole  # another user's budget is untouched
    assert len(ada.transcript) == len(stored)  # the backing history keeps everything

    with attribute(feature="support", user="ada"):  # the enclosing payer wins over user="bob"
        assert history_for(book, "bob", stored).messages == smaller

    ada.add_messages([HumanMessage("And tomorrow?")])  # the next turn: the step is read again
    assert tokens(ada.messages) <= small_room(book)


async def test_history_async_twin_reads_the_ledger() -> None:
    book, stored = ledger(), transcript()
    ada, bob = history_for(book, "ada", stored), history_for(book, "bob", stored)
    whole = await ada.aget_messages()
    assert whole == ada.messages
    assert tokens(whole) > small_room(book)
    spend(book, "ada")
    assert await ada.aget_messages() == whole  # unchanged history, same window
    smaller = await history_for(book, "ada", stored).aget_messages()
    check_kept(smaller, stored, small_room(book))
    assert len(smaller) < len(whole)
    assert await bob.aget_messages() == whole


def test_history_keeps_the_whole_budget_when_the_must_keep_messages_need_it() -> None:
    book = ledger()
    stored = [SystemMessage(SYSTEM + " Be precise. " * 100), *conversation(6)]
    ada = history_for(book, "ada", stored)
    whole = ada.messages
    assert tokens(whole[:2]) > small_room(book)  # the system and first user messages alone
    spend(book, "ada")
    assert ada.messages == whole  # a smaller context never fails a read that fits the budget


@pytest.mark.parametrize(
    ("options", "field", "problem"),
    [
        ({"ledger": "memory://"}, "ledger", "must be a tokenbudget Ledger"),
        ({"ledger": object()}, "ledger", "must be a tokenbudget Ledger"),
        ({"ledger": Ledger("memory://"), "user": 42}, "user", "must be a non-empty string"),
        ({"ledger": Ledger("memory://"), "feature": ""}, "feature", "must be a non-empty string"),
        ({"user": "ada"}, "user", "no ledger"),  # no ledger to read it
    ],
)
def test_history_bad_ledger_options_are_named(options: dict[str, Any], field: str, problem: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        TokenBudgetChatMessageHistory(model="gpt-4o", max_tokens=BUDGET, **options)
    assert caught.value.field == field
    assert problem in str(caught.value)


# -- ContextWindowMiddleware -------------------------------------------------------------------------


def agent_with(model: RecordingChatModel, middleware: ContextWindowMiddleware) -> Any:
    return create_agent(model, tools=[get_weather], system_prompt=SYSTEM, middleware=[middleware])


def tool_turn() -> RecordingChatModel:
    return replies(weather_call("call_oslo", "Oslo"), "It is 18C and sunny in Oslo.")


def trimming(
    book: Ledger | None, feature: str | None = None, user: str | None = None
) -> ContextWindowMiddleware:
    if book is None:
        return ContextWindowMiddleware("gpt-4o", max_tokens=BUDGET, pin_first_user=True)
    return ContextWindowMiddleware(
        "gpt-4o", max_tokens=BUDGET, pin_first_user=True, ledger=book, feature=feature, user=user
    )


def sent(model: RecordingChatModel) -> list[list[BaseMessage]]:
    assert len(model.received) == 2  # the tool call, then the answer
    return model.received


def check_sent(received: list[BaseMessage], history: list[BaseMessage], budget: int) -> None:
    assert tokens(received, [WEATHER_TOOL]) <= budget
    assert isinstance(received[0], SystemMessage)
    assert received[0].content == SYSTEM
    assert received[1].content == history[0].content  # pinned first user message
    assert_tool_pairs_intact(received)


def run(middleware: ContextWindowMiddleware, history: list[BaseMessage], **config: Any) -> RecordingChatModel:
    model = tool_turn()
    agent_with(model, middleware).invoke({"messages": history}, config=config or None)
    return model


def test_trim_fits_each_model_call_to_the_payers_context_budget() -> None:
    book, history = ledger(), conversation(20)
    plain = sent(run(trimming(None), history))
    middleware = trimming(book, feature="support")
    before = sent(run(middleware, history, metadata={"user": "ada"}))
    assert [[m.content for m in r] for r in before] == [[m.content for m in r] for r in plain]
    assert tokens(plain[0], [WEATHER_TOOL]) > small_room(book)

    spend(book, "ada")
    after = sent(run(middleware, history, metadata={"user": "ada"}))  # the payer from the run's metadata
    for received, whole in zip(after, plain, strict=True):
        check_sent(received, history, small_room(book))
        assert len(received) < len(whole)
    assert received[-1].content == "18C and sunny in Oslo"  # the newest turn: the tool result
    other = sent(run(middleware, history, metadata={"user": "bob"}))
    assert [len(r) for r in other] == [len(r) for r in plain]  # another user: the whole budget
    tagged = sent(run(middleware, history, tags=["user:ada"]))  # tags name the payer too
    assert [len(r) for r in tagged] == [len(r) for r in after]


def test_trim_payer_defaults_and_runtime_context() -> None:
    book, history = ledger(), conversation(20)
    spend(book, "ada")
    plain = sent(run(trimming(None), history))
    by_default = sent(run(trimming(book, feature="support", user="ada"), history))
    assert all(len(r) < len(w) for r, w in zip(by_default, plain, strict=True))

    model = tool_turn()
    agent: Any = create_agent(
        model,
        tools=[get_weather],
        system_prompt=SYSTEM,
        middleware=[trimming(book, feature="support", user="bob")],
        context_schema=dict,
    )
    agent.invoke({"messages": history}, context={"user": "ada"})  # runtime.context wins over user=
    assert [len(r) for r in sent(model)] == [len(r) for r in by_default]


async def test_trim_async_twin_reads_the_ledger() -> None:
    book, history = ledger(), conversation(20)
    spend(book, "ada")
    plain = tool_turn()
    await agent_with(plain, trimming(None)).ainvoke({"messages": history})
    model = tool_turn()
    await agent_with(model, trimming(book, feature="support", user="ada")).ainvoke({"messages": history})
    for received, whole in zip(sent(model), sent(plain), strict=True):
        check_sent(received, history, small_room(book))
        assert len(received) < len(whole)


def test_trim_keeps_the_whole_budget_when_the_must_keep_messages_need_it() -> None:
    book = ledger()
    spend(book, "ada")
    history = [HumanMessage("Hi, I am Ada. " + "I need the weather for my trip. " * 40), *conversation(4)[1:]]
    plain = sent(run(trimming(None), history))
    kept = sent(run(trimming(book, feature="support", user="ada"), history))
    assert tokens(plain[0][:2]) > small_room(book)  # the system and first user messages alone
    assert [len(r) for r in kept] == [len(r) for r in plain]


def summarising(book: Ledger | None, user: str | None = None) -> ContextWindowMiddleware:
    writer = replies(*["Ada from Lyon keeps asking about the weather."] * 20)
    payer: dict[str, Any] = {} if book is None else {"ledger": book, "feature": "support", "user": user}
    return ContextWindowMiddleware(
        "gpt-4o", max_tokens=BUDGET, pin_first_user=True, strategy="summarise", summariser=writer, **payer
    )


@pytest.mark.parametrize("use_async", [False, True])
def test_summarise_sends_a_payer_past_smaller_context_the_summary_and_fewer_turns(use_async: bool) -> None:
    """(s32) ``strategy="summarise"`` refused a ledger: it now keeps the summary and reads the
    recent turns within the smaller budget, as the summarising histories do."""
    import asyncio

    def run_with(middleware: ContextWindowMiddleware) -> list[list[BaseMessage]]:
        model = tool_turn()
        agent = agent_with(model, middleware)
        payload = {"messages": conversation(20)}
        asyncio.run(agent.ainvoke(payload)) if use_async else agent.invoke(payload)
        return sent(model)

    book = ledger()
    plain = run_with(summarising(None))
    spend(book, "ada")
    smaller = run_with(summarising(book, "ada"))
    for received, whole in zip(smaller, plain, strict=True):
        assert tokens(received, [WEATHER_TOOL]) <= small_room(book) < tokens(whole, [WEATHER_TOOL])
        assert "Ada from Lyon" in str(received[0].content)  # the summary, in the system message
        assert len(received) < len(whole)
        assert received[-1].content == whole[-1].content
        assert_tool_pairs_intact(received)
    other = run_with(summarising(book, "bob"))  # another payer: the whole window
    assert [[m.content for m in r] for r in other] == [[m.content for m in r] for r in plain]


@pytest.mark.parametrize(
    ("options", "field", "problem"),
    [
        ({"ledger": "memory://"}, "ledger", "must be a tokenbudget Ledger"),
        ({"ledger": Ledger("memory://"), "user": 42}, "user", "must be a non-empty string"),
        ({"feature": "support"}, "feature", "no ledger"),  # no ledger to read it
        ({"ledgr": Ledger("memory://")}, "ledgr", "did you mean 'ledger'"),
    ],
)
def test_middleware_bad_ledger_options_are_named(options: dict[str, Any], field: str, problem: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        ContextWindowMiddleware("gpt-4o", max_tokens=BUDGET, **options)
    assert caught.value.field == field
    assert problem in str(caught.value)


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize(("before", "moves"), [(7_000, "up"), (6_000, "down")])
def test_runnable_with_message_history_appends_the_new_turn_only_when_the_step_moves_during_the_run(
    use_async: bool, before: int, moves: str
) -> None:
    """(review s31) ``RunnableWithMessageHistory`` reads ``messages`` again after the run and
    tells the new messages from the old by its length: a step moved by the run's own charge (or
    by another call of the payer settling meanwhile) changed that length, so old turns were
    appended again, or the user's new question was lost. An unchanged history now reads alike."""
    import asyncio
    import warnings

    from langchain_core.messages import AIMessage
    from langchain_core.runnables.history import RunnableWithMessageHistory

    from langchain_tokenbudget import BudgetCallbackHandler

    book = Ledger(
        "memory://", policy=BudgetPolicy(features={"support": FeatureBudget(user_daily_tokens=10_000)})
    )
    book.record(Usage(input_tokens=before), model="gpt-4o", feature="support", user="ada")
    other = None
    if moves == "down":  # another call of the payer in flight, given back during this one
        other = book.reserve(
            model="gpt-4o", input_tokens=1_700, max_output_tokens=0, feature="support", user="ada"
        )
    backing = memory([SystemMessage(SYSTEM), *conversation(20)])
    stored = len(backing.messages)

    class Settling(RecordingChatModel):
        def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
            if other is not None:
                book.release(other)
            return super()._generate(messages, *args, **kwargs)

    usage = {"input_tokens": 1_000, "output_tokens": 5, "total_tokens": 1_005}
    model = Settling(messages=iter([AIMessage("sure", usage_metadata=usage)]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RunnableWithMessageHistory is deprecated, still used
        chain = RunnableWithMessageHistory(
            model,
            lambda session_id: TokenBudgetChatMessageHistory(
                backing,
                model="gpt-4o",
                max_tokens=BUDGET,
                pin_first_user=True,
                ledger=book,
                feature="support",
                user="ada",
            ),
        )
    config: Any = {
        "configurable": {"session_id": "s"},
        "callbacks": [BudgetCallbackHandler(book, model="gpt-4o", max_output_tokens=50)],
        "metadata": {"feature": "support", "user": "ada"},
    }
    step = book.state(feature="support", user="ada").step
    question = HumanMessage("new question")
    if use_async:
        asyncio.run(chain.ainvoke([question], config=config))
    else:
        chain.invoke([question], config=config)
    assert book.state(feature="support", user="ada").step != step  # the step did move
    added = backing.messages[stored:]
    assert [m.content for m in added] == ["new question", "sure"]


def test_one_history_read_for_two_payers_gives_each_their_own_window() -> None:
    """(regression review s31) The room the ledger gave was kept per history object: a payer's
    read right after another's, the history unchanged, got the other payer's window."""
    book, stored = ledger(), transcript()
    spend(book, "poor")
    shared = TokenBudgetChatMessageHistory(
        memory(stored), model="gpt-4o", max_tokens=BUDGET, pin_first_user=True, ledger=book, feature="support"
    )
    with attribute(user="poor"):
        poor = shared.messages
    with attribute(user="rich"):
        rich = shared.messages
    assert tokens(poor) <= small_room(book) < tokens(rich)
    assert rich == history_for(book, "rich", stored).messages


def test_a_cleared_and_refilled_history_asks_the_ledger_again() -> None:
    book, stored = ledger(), transcript()
    ada = history_for(book, "ada", stored)
    whole = ada.messages
    spend(book, "ada")
    ada.clear()
    ada.add_messages(stored)
    assert len(ada.messages) < len(whole)
