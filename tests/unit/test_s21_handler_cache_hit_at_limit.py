"""A payer whose budget refuses new calls is still answered from the response cache when the
``TokenBudgetLLMCache`` holds the answer (review s21, saving finding 2): LangChain starts the run
(the handler's reservation is refused) before it looks the cache up, so the handler leaves the
refusal to that lookup: a hit is served at $0 and recorded on the payer, a miss is refused there,
before anything is sent. Where no such lookup is sure to come, the call is refused at its start."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from echo_chat import Echo
from langchain_core.globals import set_llm_cache
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.runnables import RunnableConfig

from langchain_tokenbudget import AsyncBudgetCallbackHandler, BudgetCallbackHandler, TokenBudgetLLMCache
from tokenbudget_core import Usage, attribute
from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget
from tokenbudget_core.errors import BudgetExceededError, InvalidInputError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report
from tokenbudget_core.response_cache import ExactCache

HANDLERS = [BudgetCallbackHandler, AsyncBudgetCallbackHandler]
PAYER: RunnableConfig = {"metadata": {"feature": "chat", "user_id": "u-1"}}


class StreamingEcho(Echo):
    def _stream(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> Iterator[ChatGenerationChunk]:
        yield ChatGenerationChunk(message=AIMessageChunk(content=self._reply(messages)))


def at_the_limit(model: Echo, handler_class: type) -> tuple[Ledger, Any]:
    """A ledger whose user u-1 (feature chat) asked "How do I export?" (cached), then spent
    past the hard limit of a $0.05 daily budget elsewhere."""
    ledger = Ledger("memory://", policy=BudgetPolicy(features={"chat": FeatureBudget(user_daily_usd="0.05")}))
    if model.cache is None:
        model.cache = TokenBudgetLLMCache(ExactCache(ledger=ledger))
    handler = handler_class(ledger)
    model.invoke("How do I export?", config={**PAYER, "callbacks": [handler]})
    with attribute(feature="chat", user="u-1"):
        r = ledger.reserve(model="gpt-4o-mini", input_tokens=1000, max_output_tokens=10)
        ledger.commit(r, Usage(input_tokens=400_000, output_tokens=10))
    assert ledger.state(feature="chat", user="u-1").step == "hard_refusal"
    return ledger, handler


def ask(model: Any, how: str, text: str, config: RunnableConfig) -> AIMessage:
    if how == "invoke":
        return model.invoke(text, config=config)  # type: ignore[no-any-return]
    if how == "ainvoke":
        return asyncio.run(model.ainvoke(text, config=config))  # type: ignore[no-any-return]
    if how == "stream":  # Echo does not stream: LangChain answers through invoke
        return next(iter(model.stream(text, config=config)))  # type: ignore[no-any-return]
    if how == "abatch":
        return asyncio.run(model.abatch([text], config=config))[0]  # type: ignore[no-any-return]
    return model.batch([text], config=config)[0]  # type: ignore[no-any-return]


def hits_of(ledger: Ledger, user: str) -> int:
    return next(r.cache_hits for r in build_report(ledger).breakdown("user").rows if r.key == user)


HOWS = ["invoke", "ainvoke", "stream", "batch", "abatch"]


@pytest.mark.parametrize("handler_class", HANDLERS)
@pytest.mark.parametrize("how", HOWS)
def test_a_cached_answer_is_served_at_the_hard_limit_and_a_new_question_refused(
    handler_class: type, how: str
) -> None:
    model = Echo()
    ledger, handler = at_the_limit(model, handler_class)
    config: RunnableConfig = {**PAYER, "callbacks": [handler]}
    served = ask(model, how, "How do I export?", config)
    assert served.content == "1: How do I export?"
    assert "tokenbudget_cache" in served.response_metadata
    assert model.calls == 1  # the cache answered
    assert hits_of(ledger, "u-1") == 1  # on the payer, $0
    with pytest.raises(BudgetExceededError) as refused:
        ask(model, how, "A brand new question", config)
    assert refused.value.budget.startswith("user_daily_usd")
    assert model.calls == 1  # the miss was refused before anything was sent
    assert handler._runs == {}
    assert handler._deferred == {}


@pytest.mark.parametrize("handler_class", HANDLERS)
def test_a_refusal_left_to_the_cache_does_not_outlive_its_call(handler_class: type) -> None:
    """Later calls in the same context without the handler are neither refused nor charged."""
    model = Echo()
    _ledger, handler = at_the_limit(model, handler_class)
    model.invoke("How do I export?", config={**PAYER, "callbacks": [handler]})  # served, deferred refusal
    with pytest.raises(BudgetExceededError):
        model.invoke("Refused question", config={**PAYER, "callbacks": [handler]})
    assert model.invoke("Another question").content == "2: Another question"  # no handler: sent


@pytest.mark.parametrize("handler_class", HANDLERS)
def test_the_global_cache_serves_too(handler_class: type) -> None:
    model = Echo()
    ledger = Ledger("memory://", policy=BudgetPolicy(features={"chat": FeatureBudget(user_daily_usd="0.05")}))
    set_llm_cache(TokenBudgetLLMCache(ExactCache(ledger=ledger)))
    try:
        model2, handler = Echo(), handler_class(ledger)
        model2.invoke("How do I export?", config={**PAYER, "callbacks": [handler]})
        with attribute(feature="chat", user="u-1"):
            r = ledger.reserve(model="gpt-4o-mini", input_tokens=1000, max_output_tokens=10)
            ledger.commit(r, Usage(input_tokens=400_000, output_tokens=10))
        assert model2.invoke("How do I export?", config={**PAYER, "callbacks": [handler]}).content == (
            "1: How do I export?"
        )
        with pytest.raises(BudgetExceededError):
            model2.invoke("A brand new question", config={**PAYER, "callbacks": [handler]})
        assert model2.calls == 1
    finally:
        set_llm_cache(None)
    assert model.calls == 0


@pytest.mark.parametrize("handler_class", HANDLERS)
def test_where_no_cache_lookup_comes_first_the_call_is_refused_at_its_start(handler_class: type) -> None:
    """A streaming ``stream()`` never looks a cache up; ``cache=False`` neither; a multi-prompt
    call is refused whole at its start, as before: nothing is sent."""
    model = StreamingEcho()
    _ledger, handler = at_the_limit(model, handler_class)
    config: RunnableConfig = {**PAYER, "callbacks": [handler]}
    with pytest.raises(BudgetExceededError):
        list(model.stream("How do I export?", config=config))
    with pytest.raises(BudgetExceededError):
        model.generate(
            [[HumanMessage("How do I export?")], [HumanMessage("other")]],
            callbacks=[handler], metadata=PAYER["metadata"],  # type: ignore[typeddict-item]
        )  # fmt: skip
    uncached = Echo(cache=False)
    with pytest.raises(BudgetExceededError):
        uncached.invoke("How do I export?", config=config)
    assert model.calls == 1  # (the first, cached question only)
    assert uncached.calls == 0
    assert handler._deferred == {}


@pytest.mark.parametrize("handler_class", HANDLERS)
@pytest.mark.parametrize("is_async", [False, True])
def test_a_refusal_stands_when_another_handler_of_the_call_reserved_it(
    handler_class: type, is_async: bool
) -> None:
    """The config's handler charges u-1 (at the limit: refused, left to the cache); the model's
    own handler charges u-2 (room left: reserved). A miss is still refused, nothing is sent, and
    nothing stays held; a hit is served, recorded on u-1."""
    model = Echo()
    ledger, _ = at_the_limit(model, handler_class)
    refusing, reserving = handler_class(ledger, feature="chat", user="u-1"), handler_class(ledger, user="u-2")
    model.callbacks = [reserving]
    config: RunnableConfig = {"callbacks": [refusing]}
    ask_ = (
        (lambda t: asyncio.run(model.ainvoke(t, config=config)))
        if is_async
        else (lambda t: model.invoke(t, config=config))
    )
    with pytest.raises(BudgetExceededError):
        ask_("A brand new question")
    assert model.calls == 1
    assert reserving._runs == {}  # its reservation released at the run's error
    assert "u-2" not in {r.key for r in build_report(ledger).breakdown("user").rows}  # nothing charged
    assert ask_("How do I export?").content == "1: How do I export?"
    assert hits_of(ledger, "u-1") == 1
    assert refusing._deferred == reserving._deferred == {}
    assert refusing._runs == reserving._runs == {}


class Uncountable:
    """A token counter (the handler's injection seam) that cannot count anything."""

    def count(self, text: str) -> int:
        raise InvalidInputError("text", "cannot be counted here")

    def count_messages(self, messages: Any, tools: Any = None) -> int:
        raise InvalidInputError("messages", "cannot be counted here")


@pytest.mark.parametrize("handler_class", HANDLERS)
@pytest.mark.parametrize("is_async", [False, True])
def test_a_refusal_left_to_the_cache_ends_when_another_handler_stops_the_start(
    handler_class: type, is_async: bool
) -> None:
    """The config's handler leaves its refusal to the cache; the model's own handler then raises,
    so LangChain stops the call before its lookup: a later call without handlers in the same
    context is neither refused by that refusal nor given its payer."""
    model = Echo()
    ledger, refusing = at_the_limit(model, handler_class)
    model.callbacks = [handler_class(ledger, counter=Uncountable())]

    async def both() -> str:
        with pytest.raises(InvalidInputError):
            await model.ainvoke("A brand new question", config={**PAYER, "callbacks": [refusing]})
        model.callbacks = None
        return str((await model.ainvoke("A later question")).content)

    if is_async:
        later = asyncio.run(both())
    else:
        with pytest.raises(InvalidInputError):
            model.invoke("A brand new question", config={**PAYER, "callbacks": [refusing]})
        model.callbacks = None
        later = str(model.invoke("A later question").content)
    assert later == "2: A later question"  # sent, not refused
    assert refusing._runs == {}
