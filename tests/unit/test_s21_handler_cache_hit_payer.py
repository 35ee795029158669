"""A response-cache hit is recorded on the payer the budget handler resolved for the run (its
metadata, the handler's defaults), and ``TokenBudgetLLMCache(scope=None)`` scopes entries by that
payer (review s21, saving findings 3 and 4). No payer leaks to a later call made without the
handler in the same context: sync, async, streams (one closed early, one left suspended), batch.
Real LangChain runs on fake chat models, checked against a real memory ledger's report."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from echo_chat import Echo
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.runnables import RunnableConfig

from langchain_tokenbudget import AsyncBudgetCallbackHandler, BudgetCallbackHandler, TokenBudgetLLMCache
from tokenbudget_core import attribute
from tokenbudget_core.cache_keys import CacheScope
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report
from tokenbudget_core.response_cache import ExactCache
from tokenbudget_core.semantic_cache import SemanticCache

HANDLERS = [BudgetCallbackHandler, AsyncBudgetCallbackHandler]


class StreamingEcho(Echo):
    """The same, streaming word by word when asked to stream (``stream()``)."""

    def _stream(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> Iterator[ChatGenerationChunk]:
        for word in self._reply(messages).split():
            yield ChatGenerationChunk(message=AIMessageChunk(content=word + " "))


def by_user(ledger: Ledger) -> dict[str | None, tuple[int, int]]:
    """``user -> (requests, cache hits)`` in the ledger's report."""
    rows = build_report(ledger).breakdown("user").rows
    return {r.key: (r.requests, r.cache_hits) for r in rows if r.requests or r.cache_hits}


def by_feature(ledger: Ledger) -> dict[str | None, tuple[int, int]]:
    rows = build_report(ledger).breakdown("feature").rows
    return {r.key: (r.requests, r.cache_hits) for r in rows if r.requests or r.cache_hits}


def saved(ledger: Ledger, user: str) -> Decimal:
    return next(r.saved_usd for r in build_report(ledger).breakdown("user").rows if r.key == user)


def ask(model: Any, how: str, text: str, config: RunnableConfig | None = None) -> AIMessage:
    if how == "invoke":
        return model.invoke(text, config=config)  # type: ignore[no-any-return]
    if how == "ainvoke":
        return asyncio.run(model.ainvoke(text, config=config))  # type: ignore[no-any-return]
    if how == "stream":  # (Echo does not stream: LangChain answers through invoke, cache and all)
        chunks = list(model.stream(text, config=config))
        assert len(chunks) == 1
        return chunks[0]  # type: ignore[no-any-return]
    if how == "abatch":
        return asyncio.run(model.abatch([text], config=config))[0]  # type: ignore[no-any-return]
    return model.batch([text], config=config)[0]  # type: ignore[no-any-return]


HOWS = ["invoke", "ainvoke", "stream", "batch", "abatch"]


@pytest.mark.parametrize("cache", [ExactCache, SemanticCache])
@pytest.mark.parametrize("handler_class", HANDLERS)
@pytest.mark.parametrize("how", HOWS)
def test_a_hit_is_recorded_on_the_payer_named_in_run_metadata(
    cache: type[Any], handler_class: type, how: str
) -> None:
    ledger = Ledger("memory://")
    model = Echo(cache=TokenBudgetLLMCache(cache(ledger=ledger), scope=CacheScope(tenant="acme")))
    handler = handler_class(ledger)
    config: RunnableConfig = {"callbacks": [handler], "metadata": {"feature": "chat", "user_id": "u-7"}}
    ask(model, how, "Hello", config)
    hit = ask(model, how, "Hello", config)
    assert model.calls == 1
    assert hit.response_metadata["tokenbudget_cache"]["recorded"] is True
    assert by_user(ledger) == {"u-7": (2, 1)}  # the miss and the hit, nothing on user None
    assert by_feature(ledger) == {"chat": (2, 1)}
    assert saved(ledger, "u-7") > 0
    assert handler._runs == {}


@pytest.mark.parametrize("handler_class", HANDLERS)
@pytest.mark.parametrize("how", HOWS)
def test_a_hit_is_recorded_on_the_handlers_own_feature_and_user(handler_class: type, how: str) -> None:
    ledger = Ledger("memory://")
    model = Echo(cache=TokenBudgetLLMCache(ExactCache(ledger=ledger)))
    handler = handler_class(ledger, feature="chat", user="u-1")
    ask(model, how, "Hello", {"callbacks": [handler]})
    ask(model, how, "Hello", {"callbacks": [handler]})
    assert model.calls == 1
    assert by_user(ledger) == {"u-1": (2, 1)}
    assert by_feature(ledger) == {"chat": (2, 1)}


@pytest.mark.parametrize("handler_class", HANDLERS)
def test_an_enclosing_attribute_block_still_wins(handler_class: type) -> None:
    ledger = Ledger("memory://")
    model = Echo(cache=TokenBudgetLLMCache(ExactCache(ledger=ledger)))
    handler = handler_class(ledger)
    config: RunnableConfig = {"callbacks": [handler], "metadata": {"user_id": "from-metadata"}}
    with attribute(user="outer", tenant="acme"):
        model.invoke("Hello", config=config)
        model.invoke("Hello", config=config)
    assert model.calls == 1
    assert by_user(ledger) == {"outer": (2, 1)}


# -- finding 4: the default scope is the run's payer -------------------------------------------------


@pytest.mark.parametrize("cache", [ExactCache, SemanticCache])
@pytest.mark.parametrize("handler_class", HANDLERS)
@pytest.mark.parametrize("how", HOWS)
def test_default_scope_keeps_users_named_in_run_metadata_apart(
    cache: type[Any], handler_class: type, how: str
) -> None:
    ledger = Ledger("memory://")
    model = Echo(cache=TokenBudgetLLMCache(cache(ledger=ledger)))  # scope=None
    handler = handler_class(ledger)

    def config(user: str) -> RunnableConfig:
        return {"callbacks": [handler], "metadata": {"feature": "bank", "user": user}}

    alice = ask(model, how, "What is my balance?", config("alice"))
    bob = ask(model, how, "What is my balance?", config("bob"))
    again = ask(model, how, "What is my balance?", config("alice"))
    assert (alice.content, bob.content, again.content) == (
        "1: What is my balance?",
        "2: What is my balance?",  # bob's own answer, not alice's
        "1: What is my balance?",  # alice's, from the cache
    )
    assert by_user(ledger) == {"alice": (2, 1), "bob": (1, 0)}


# -- no payer leaks to a later call without the handler ----------------------------------------------


def later_calls_without_handler(model: Echo, ledger: Ledger, text: str) -> None:
    """Two calls made later in the same context with no handler and no attribute() block: the
    first misses (the earlier payer's entry is not in its scope), the second hits; neither is
    charged or recorded on the earlier payer."""
    calls = model.calls
    first, second = model.invoke(text), model.invoke(text)
    assert model.calls == calls + 1
    assert "tokenbudget_cache" not in first.response_metadata
    assert second.response_metadata["tokenbudget_cache"]["recorded"] is True
    assert by_user(ledger)[None] == (1, 1)  # the hit (a request, $0): on nobody, as no payer was named


@pytest.mark.parametrize("handler_class", HANDLERS)
def test_no_payer_leaks_after_a_sync_call(handler_class: type) -> None:
    ledger = Ledger("memory://")
    model = Echo(cache=TokenBudgetLLMCache(ExactCache(ledger=ledger)))
    config: RunnableConfig = {"callbacks": [handler_class(ledger)], "metadata": {"user": "alice"}}
    model.invoke("Hello", config=config)
    model.invoke("Hello", config=config)
    later_calls_without_handler(model, ledger, "Hello")
    assert by_user(ledger)["alice"] == (2, 1)


@pytest.mark.parametrize("handler_class", HANDLERS)
def test_no_payer_leaks_after_an_async_call(handler_class: type) -> None:
    ledger = Ledger("memory://")
    model = Echo(cache=TokenBudgetLLMCache(ExactCache(ledger=ledger)))
    config: RunnableConfig = {"callbacks": [handler_class(ledger)], "metadata": {"user": "alice"}}

    async def main() -> tuple[AIMessage, AIMessage, AIMessage, AIMessage]:
        await model.ainvoke("Hello", config=config)
        await model.ainvoke("Hello", config=config)
        first, second = await model.ainvoke("Hello"), await model.ainvoke("Hello")  # same task
        return first, second, first, second

    first, second, _, _ = asyncio.run(main())
    assert "tokenbudget_cache" not in first.response_metadata
    assert "tokenbudget_cache" in second.response_metadata
    assert model.calls == 2
    assert by_user(ledger) == {"alice": (2, 1), None: (1, 1)}


@pytest.mark.parametrize("handler_class", HANDLERS)
def test_no_payer_leaks_after_a_stream_closed_early(handler_class: type) -> None:
    ledger = Ledger("memory://")
    model = StreamingEcho(cache=TokenBudgetLLMCache(ExactCache(ledger=ledger)))
    handler = handler_class(ledger)
    stream = model.stream("Hello", config={"callbacks": [handler], "metadata": {"user": "alice"}})
    next(stream)
    stream.close()  # the consumer stops early: LangChain ends the run with an error
    later_calls_without_handler(model, ledger, "Hello")
    assert "alice" in by_user(ledger)
    assert by_user(ledger)["alice"][1] == 0
    assert handler._runs == {}


@pytest.mark.parametrize("handler_class", HANDLERS)
def test_no_payer_leaks_from_a_stream_left_suspended(handler_class: type) -> None:
    """A stream its consumer leaves open keeps its run open: the run streamed, so its claim is
    closed (its cache lookup, if any, came before the first chunk)."""
    ledger = Ledger("memory://")
    model = StreamingEcho(cache=TokenBudgetLLMCache(ExactCache(ledger=ledger)))
    handler = handler_class(ledger)
    stream = model.stream("Hello", config={"callbacks": [handler], "metadata": {"user": "alice"}})
    next(stream)  # suspended, still referenced: its run stays open
    later_calls_without_handler(model, ledger, "Hello")
    assert by_user(ledger).get("alice", (0, 0))[1] == 0
    assert len(handler._runs) == 1
    stream.close()


@pytest.mark.parametrize("handler_class", HANDLERS)
def test_no_payer_leaks_after_a_batch_or_a_multi_prompt_call(handler_class: type) -> None:
    ledger = Ledger("memory://")
    model = Echo(cache=TokenBudgetLLMCache(ExactCache(ledger=ledger)))
    handler = handler_class(ledger)
    configs: list[RunnableConfig] = [
        {"callbacks": [handler], "metadata": {"user": "alice"}},
        {"callbacks": [handler], "metadata": {"user": "bob"}},
    ]
    model.batch(["Hello", "Hello"], config=configs)
    prompts = [[HumanMessage("Hi")], [HumanMessage("Bye")], [HumanMessage("Hi")]]
    model.generate(prompts, callbacks=[handler], metadata={"user": "carol"})  # type: ignore[arg-type]
    assert by_user(ledger)["carol"] == (3, 1)  # the second "Hi" hits the first one's entry
    model.generate(prompts, callbacks=[handler], metadata={"user": "carol"})  # type: ignore[arg-type]
    assert by_user(ledger)["carol"] == (6, 4)  # every prompt a hit, each on carol
    later_calls_without_handler(model, ledger, "Hello")
    assert by_user(ledger)["alice"] == (1, 0)
    assert by_user(ledger)["bob"] == (1, 0)
    assert handler._runs == {}


@pytest.mark.parametrize("handler_class", HANDLERS)
@pytest.mark.parametrize("is_async", [False, True])
def test_no_payer_leaks_from_a_run_on_a_model_without_cache(handler_class: type, is_async: bool) -> None:
    """A run on a model with no cache makes no lookup: its claim is never taken, and it is
    closed at the run's end, so a later call of a cached model with the same prompt does not
    take it."""
    ledger = Ledger("memory://")
    uncached, cached = Echo(), Echo(cache=TokenBudgetLLMCache(ExactCache(ledger=ledger)))
    config: RunnableConfig = {"callbacks": [handler_class(ledger)], "metadata": {"user": "alice"}}
    if is_async:

        async def main() -> None:
            await uncached.ainvoke("Hello", config=config)
            await cached.ainvoke("Hello")
            await cached.ainvoke("Hello")

        asyncio.run(main())
    else:
        uncached.invoke("Hello", config=config)
        later_calls_without_handler(cached, ledger, "Hello")
    assert by_user(ledger) == {"alice": (1, 0), None: (1, 1)}


@pytest.mark.parametrize("handler_class", HANDLERS)
def test_no_payer_leaks_after_an_async_batch_or_multi_prompt_call(handler_class: type) -> None:
    ledger = Ledger("memory://")
    model = Echo(cache=TokenBudgetLLMCache(ExactCache(ledger=ledger)))
    handler = handler_class(ledger)
    configs: list[RunnableConfig] = [
        {"callbacks": [handler], "metadata": {"user": "alice"}},
        {"callbacks": [handler], "metadata": {"user": "bob"}},
    ]
    prompts = [[HumanMessage("Hi")], [HumanMessage("Bye")]]

    async def main() -> tuple[AIMessage, AIMessage]:
        await model.abatch(["Hello", "Hello"], config=configs)
        for _ in range(2):  # prompts of one call run at once: both miss, then both hit
            await model.agenerate(prompts, callbacks=[handler], metadata={"user": "carol"})  # type: ignore[arg-type]
        return await model.ainvoke("Hello"), await model.ainvoke("Hello")  # later, no handler

    first, second = asyncio.run(main())
    assert "tokenbudget_cache" not in first.response_metadata
    assert "tokenbudget_cache" in second.response_metadata
    assert by_user(ledger) == {"alice": (1, 0), "bob": (1, 0), "carol": (4, 2), None: (1, 1)}
    assert handler._runs == {}


@pytest.mark.parametrize("handler_class", HANDLERS)
@pytest.mark.parametrize("how", HOWS)
def test_a_hit_the_cache_recorded_in_another_ledger_is_recorded_in_the_handlers_too(
    handler_class: type, how: str
) -> None:
    """The cache keeps its own ledger: the hit is recorded there on the payer, and the handler's
    ledger (which charged the miss) records it too, instead of only releasing its reservation."""
    cache_ledger, ledger = Ledger("memory://"), Ledger("memory://")
    model = Echo(cache=TokenBudgetLLMCache(ExactCache(ledger=cache_ledger)))
    config: RunnableConfig = {"callbacks": [handler_class(ledger)], "metadata": {"user_id": "u-7"}}
    ask(model, how, "Hello", config)
    ask(model, how, "Hello", config)
    assert model.calls == 1
    assert by_user(ledger) == {"u-7": (2, 1)}
    assert by_user(cache_ledger) == {"u-7": (1, 1)}
