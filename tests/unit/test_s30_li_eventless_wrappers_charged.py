"""A ``CachedLLM`` or ``RoutedLLM`` makes no callback event of its own: the LLMs it wraps make
them, on their own callback managers (review s30 llamaindex, finding 1). ``handler.install(wrapper)``
reaches those LLMs too, so every provider call is charged once and a spent budget refuses it,
whatever order the LLMs and ``Settings.callback_manager`` were made in; a budget handler an engine
or ``Settings.llm`` hands the wrapper that does not reach them is warned about, once, and never
put on a wrapped LLM for the call (a wrapped LLM shared by two tenants' wrappers would then check
and charge the other's calls: regression review s30). Real engines on ``MockLLM`` tiers, real
memory ledgers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal

import pytest
from llama_index.core import Settings
from llama_index.core.callbacks import CallbackManager
from llama_index.core.chat_engine import CondensePlusContextChatEngine, SimpleChatEngine
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.llms import LLM, ChatMessage, MockLLM
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from llamaindex_tokenbudget import (
    BudgetCallbackHandler,
    CachedLLM,
    CostEventHandler,
    RoutedLLM,
    TokenBudgetChatMemory,
)
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.cache_keys import CacheScope
from tokenbudget_core.errors import BudgetExceededError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report
from tokenbudget_core.response_cache import ExactCache

OUT = 5  # MockLLM(max_tokens=5) answers five tokens: output_tokens == 5 x the calls charged


class _Retriever(BaseRetriever):
    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [NodeWithScore(node=TextNode(text="Paris is the capital of France."), score=1.0)]


@pytest.fixture(autouse=True)
def _settings_restored() -> Iterator[None]:
    """Each test starts with no ``Settings.callback_manager`` (LLMs made now keep lists of their
    own, the usual order in an app) and gets the earlier settings back after."""
    manager, llm = Settings._callback_manager, Settings._llm
    Settings._callback_manager, Settings._llm = None, None
    loop = asyncio.new_event_loop()  # (a synthesizer's sync token estimates use the thread's loop)
    asyncio.set_event_loop(loop)
    try:
        yield
    finally:
        asyncio.set_event_loop(None)
        loop.close()
        Settings._callback_manager, Settings._llm = manager, llm


def _refusing() -> Ledger:
    return Ledger("memory://", policy=BudgetPolicy(daily_usd=Decimal("0")))


def _totals(ledger: Ledger) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in ledger.store.rollup([ledger.day()]):
        for key, value in row.values.items():
            out[key] = out.get(key, 0) + int(value)
    return out


def _memory() -> TokenBudgetChatMemory:
    return TokenBudgetChatMemory(model="gpt-4o-mini", max_tokens=2000)


def _cached() -> tuple[CachedLLM, list[LLM]]:
    inner = MockLLM(max_tokens=OUT)
    return CachedLLM(inner, ExactCache(), scope=CacheScope(tenant="acme"), model="gpt-4o-mini"), [inner]


def _routed() -> tuple[RoutedLLM, list[LLM]]:
    small, large = MockLLM(max_tokens=OUT), MockLLM(max_tokens=OUT)
    routed = RoutedLLM(
        tiers={"small": small, "large": large}, models={"small": "gpt-4o-mini", "large": "gpt-4o"}
    )
    return routed, [small, large]


def _cached_routed() -> tuple[CachedLLM, list[LLM]]:
    routed, tiers = _routed()
    return CachedLLM(routed, ExactCache(), scope=CacheScope(tenant="acme"), model="gpt-4o-mini"), tiers


WRAPPERS = {"CachedLLM": _cached, "RoutedLLM": _routed, "CachedLLM(RoutedLLM)": _cached_routed}


def _condense_plus_context(llm: LLM) -> CondensePlusContextChatEngine:
    return CondensePlusContextChatEngine.from_defaults(retriever=_Retriever(), llm=llm, memory=_memory())


@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_install_on_a_wrapper_charges_its_direct_calls_once(wrapper: str) -> None:
    llm, inner = WRAPPERS[wrapper]()
    ledger = Ledger("memory://")
    handler = BudgetCallbackHandler(ledger, model="gpt-4o-mini").install(llm)
    for model in inner:  # the LLMs making the events list it, once
        assert [h for h in model.callback_manager.handlers if h is handler] == [handler]
    llm.complete("What is the capital of France?")
    llm.chat([ChatMessage(role="user", content="And of Spain?")])
    totals = _totals(ledger)
    assert totals["requests"] == 2
    assert totals["output_tokens"] == 2 * OUT  # each provider call charged once
    handler.uninstall(llm)
    for model in [llm, *inner]:
        assert handler not in model.callback_manager.handlers
    llm.complete("A third question")
    assert _totals(ledger)["requests"] == 2  # no longer charged


@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_install_on_a_wrapper_refuses_with_a_spent_budget(wrapper: str) -> None:
    llm, _ = WRAPPERS[wrapper]()
    BudgetCallbackHandler(_refusing(), model="gpt-4o-mini").install(llm)
    with pytest.raises(BudgetExceededError):
        llm.chat([ChatMessage(role="user", content="hi")])


@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_install_on_a_wrapper_in_a_simple_chat_engine(wrapper: str) -> None:
    llm, _ = WRAPPERS[wrapper]()
    ledger = Ledger("memory://")
    BudgetCallbackHandler(ledger, model="gpt-4o-mini").install(llm)
    engine = SimpleChatEngine.from_defaults(llm=llm, memory=_memory())
    engine.chat("hello")
    engine.chat("where is Paris?")
    totals = _totals(ledger)
    assert totals["requests"] == 2
    assert totals["output_tokens"] == 2 * OUT
    refused, _ = WRAPPERS[wrapper]()
    BudgetCallbackHandler(_refusing(), model="gpt-4o-mini").install(refused)
    refusing_engine = SimpleChatEngine.from_defaults(llm=refused, memory=_memory())
    with pytest.raises(BudgetExceededError):
        refusing_engine.chat("hello")


@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_an_engine_handler_that_does_not_reach_the_wrapped_llms_is_warned_once(
    wrapper: str, caplog: pytest.LogCaptureFixture
) -> None:
    """No ``install``: the handler only in ``Settings.callback_manager``, set after the LLMs were
    made; the engine's synthesizer hands it to the wrapper alone."""
    llm, inner = WRAPPERS[wrapper]()
    ledger = Ledger("memory://")
    handler = BudgetCallbackHandler(ledger, model="gpt-4o-mini")
    Settings.callback_manager = CallbackManager([handler])
    engine = _condense_plus_context(llm)
    with caplog.at_level("WARNING", logger="llamaindex_tokenbudget.budget_callback"):
        engine.chat("hello")
        engine.chat("where is Paris?")
    warned = [r for r in caplog.records if "does not reach" in r.getMessage()]
    assert len(warned) == 1
    assert "handler.install(" in warned[0].getMessage()
    for model in inner:  # nothing put on the wrapped LLMs
        assert handler not in model.callback_manager.handlers


@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_an_engine_handler_installed_on_the_wrapper_charges_each_call_once(wrapper: str) -> None:
    llm, _inner = WRAPPERS[wrapper]()
    ledger = Ledger("memory://")
    Settings.callback_manager = CallbackManager([])
    BudgetCallbackHandler(ledger, model="gpt-4o-mini").install(llm)
    engine = _condense_plus_context(llm)
    engine.chat("hello")
    engine.chat("where is Paris?")
    totals = _totals(ledger)
    assert totals["requests"] >= 2
    assert totals["output_tokens"] == OUT * totals["requests"]  # each provider call charged once


@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_an_engine_handler_installed_on_the_wrapper_refuses_with_a_spent_budget(wrapper: str) -> None:
    llm, _ = WRAPPERS[wrapper]()
    Settings.callback_manager = CallbackManager([])
    BudgetCallbackHandler(_refusing(), model="gpt-4o-mini").install(llm)
    with pytest.raises(BudgetExceededError):
        _condense_plus_context(llm).chat("hello")


def test_two_tenants_wrappers_around_one_llm_never_charge_each_others_calls() -> None:
    shared = MockLLM(max_tokens=OUT)
    books = {t: Ledger("memory://") for t in ("a", "b")}
    wrappers = {
        t: CachedLLM(shared, ExactCache(), scope=CacheScope(tenant=t), model="gpt-4o-mini") for t in books
    }
    for t, wrapper in wrappers.items():  # as an engine hands each wrapper its tenant's manager
        wrapper.callback_manager = CallbackManager([BudgetCallbackHandler(books[t], model="gpt-4o-mini")])
    wrappers["a"].complete("a's question")
    wrappers["b"].complete("b's question")
    wrappers["b"].complete("b's other question")
    assert not [h for h in shared.callback_manager.handlers if isinstance(h, BudgetCallbackHandler)]
    assert _totals(books["a"]).get("requests", 0) == 0  # never b's calls


def test_a_handler_on_both_managers_charges_each_call_once() -> None:
    llm, inner = _routed()
    ledger = Ledger("memory://")
    handler = BudgetCallbackHandler(ledger, model="gpt-4o-mini")
    for model in inner:
        model.callback_manager.add_handler(handler)  # on the tiers' own managers
    Settings.callback_manager = CallbackManager([handler])  # and the engine's
    engine = _condense_plus_context(llm)
    engine.chat("hello")
    engine.chat("where is Paris?")
    totals = _totals(ledger)
    assert totals["requests"] >= 2
    assert totals["output_tokens"] == OUT * totals["requests"]
    for model in inner:
        assert [h for h in model.callback_manager.handlers if h is handler] == [handler]


def _async_engine_totals(llm: LLM) -> dict[str, int]:
    ledger = Ledger("memory://")
    Settings.callback_manager = CallbackManager([])
    BudgetCallbackHandler(ledger, model="gpt-4o-mini").install(llm)
    engine = _condense_plus_context(llm)

    async def run() -> None:
        await engine.achat("hello")
        response = await engine.astream_chat("where is Paris?")
        async for _ in response.async_response_gen():
            pass

    asyncio.get_event_loop().run_until_complete(run())
    return _totals(ledger)


@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_async_engine_calls_through_a_wrapper_are_charged_as_a_plain_llm(wrapper: str) -> None:
    """``achat`` and ``astream_chat``: charged as the same engine on a plain ``MockLLM`` is (a
    stream's output is an estimate from its text, the same for both)."""
    control = _async_engine_totals(MockLLM(max_tokens=OUT))
    Settings._callback_manager = None
    llm, _ = WRAPPERS[wrapper]()
    totals = _async_engine_totals(llm)
    assert control["requests"] >= 2
    for key in ("requests", "input_tokens", "output_tokens"):
        assert totals[key] == control[key], key


@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_a_cost_handler_of_the_same_ledger_leaves_an_installed_call_to_the_budget_handler(
    wrapper: str,
) -> None:
    """The installed handler is on the wrapped LLM's manager, where ``CostEventHandler`` looks for
    a budget handler of its ledger: the call is charged once, by the budget handler."""
    llm, _ = WRAPPERS[wrapper]()
    ledger = Ledger("memory://")
    cost = CostEventHandler(ledger, model="gpt-4o-mini", feature="recorded")
    get_dispatcher().add_event_handler(cost)
    try:
        Settings.callback_manager = CallbackManager([])
        BudgetCallbackHandler(ledger, model="gpt-4o-mini", feature="charged").install(llm)
        _condense_plus_context(llm).chat("hello")
    finally:
        get_dispatcher().event_handlers.remove(cost)
    features = {r.key: r.requests for r in build_report(ledger).breakdown("feature").rows}
    assert set(features) == {"charged"}  # the budget handler's, never also the cost handler's
    assert features["charged"] >= 1
    assert _totals(ledger)["output_tokens"] == OUT * features["charged"]  # each call once
