"""Where a LlamaIndex ``BudgetCallbackHandler`` is registered for chat and query engines (review
s25_li, finding 8). LlamaIndex's response synthesizer (``BaseSynthesizer.__init__``, built by
``ContextChatEngine``, ``CondensePlusContextChatEngine`` and every query engine) and the
``Settings.llm`` getter replace an LLM's callback manager: a handler only there is dropped. The
documented placement is ``Settings.callback_manager``, and ``handler.install(llm)`` registers it
there and on the LLM (direct calls), charged once per call. Real engines on ``MockLLM``, real
memory ledgers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from llama_index.core import Document, Settings, SummaryIndex
from llama_index.core.callbacks import CallbackManager, LlamaDebugHandler
from llama_index.core.chat_engine import CondensePlusContextChatEngine, ContextChatEngine, SimpleChatEngine
from llama_index.core.llms import ChatMessage, MockLLM
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from llamaindex_tokenbudget import BudgetCallbackHandler, TokenBudgetChatMemory
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.errors import BudgetExceededError, InvalidInputError
from tokenbudget_core.ledger import Ledger

ROOT = Path(__file__).resolve().parents[2]


class _Retriever(BaseRetriever):
    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [NodeWithScore(node=TextNode(text="Paris is the capital of France."), score=1.0)]


@pytest.fixture(autouse=True)
def _settings_restored() -> Iterator[None]:
    """Each test starts with no ``Settings.callback_manager`` (an earlier one's list of handlers,
    which LLMs made meanwhile share, is left untouched) and gets the earlier one back after."""
    manager, llm = Settings._callback_manager, Settings._llm
    Settings._callback_manager, Settings._llm = None, None
    # LlamaIndex's synchronous token estimates (a synthesizer's prompt helper) run on the
    # thread's event loop, creating one it never closes: give them one, closed after.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        yield
    finally:
        asyncio.set_event_loop(None)
        loop.close()
        Settings._callback_manager, Settings._llm = manager, llm


def _refusing() -> Ledger:
    return Ledger("memory://", policy=BudgetPolicy(daily_usd="0.0000001"))


def _requests(ledger: Ledger) -> int:
    return sum(r.values.get("requests", 0) for r in ledger.store.rollup([ledger.day()]))


def _memory() -> TokenBudgetChatMemory:
    """A memory of our own (the engines' default one opens an aiosqlite store it never closes)."""
    return TokenBudgetChatMemory(model="gpt-4o-mini", max_tokens=2000)


ENGINES: dict[str, Callable[[MockLLM], Callable[[], Any]]] = {
    "ContextChatEngine": lambda llm: (
        lambda: ContextChatEngine.from_defaults(retriever=_Retriever(), llm=llm, memory=_memory()).chat(
            "What is the capital of France?"
        )
    ),
    "CondensePlusContextChatEngine": lambda llm: (
        lambda: CondensePlusContextChatEngine.from_defaults(
            retriever=_Retriever(), llm=llm, memory=_memory()
        ).chat("What is the capital of France?")
    ),
    "as_query_engine": lambda llm: (
        lambda: (
            SummaryIndex([Document(text="Paris is the capital of France.")])
            .as_query_engine(llm=llm)
            .query("What is the capital of France?")
        )
    ),
}


@pytest.mark.parametrize("engine", list(ENGINES))
def test_installed_handler_refuses_engine_calls_with_a_refusing_budget(engine: str) -> None:
    ledger = _refusing()
    llm = MockLLM(max_tokens=5)
    BudgetCallbackHandler(ledger, model="gpt-4o-mini").install(llm)
    with pytest.raises(BudgetExceededError):
        ENGINES[engine](llm)()
    assert _requests(ledger) == 0
    with pytest.raises(BudgetExceededError):  # and the same LLM object called directly afterwards
        llm.chat([ChatMessage(role="user", content="hi")])


@pytest.mark.parametrize("engine", list(ENGINES))
def test_installed_handler_charges_engine_calls_with_a_permissive_budget(engine: str) -> None:
    ledger = Ledger("memory://")
    llm = MockLLM(max_tokens=5)
    BudgetCallbackHandler(ledger, model="gpt-4o-mini").install(llm)
    ENGINES[engine](llm)()
    charged = _requests(ledger)
    assert charged >= 1
    [row] = ledger.store.rollup([ledger.day()])
    assert row.values["output_tokens"] == 5 * charged  # each call MockLLM answered, charged once


def test_settings_callback_manager_placement_refuses_and_charges_engines() -> None:
    """The placement the docs recommend, by hand: ``Settings.callback_manager``."""
    refusing = _refusing()
    Settings.callback_manager = CallbackManager([BudgetCallbackHandler(refusing, model="gpt-4o-mini")])
    with pytest.raises(BudgetExceededError):
        ENGINES["ContextChatEngine"](MockLLM(max_tokens=5))()
    with pytest.raises(BudgetExceededError):
        ENGINES["as_query_engine"](MockLLM(max_tokens=5))()
    permissive = Ledger("memory://")
    Settings.callback_manager = CallbackManager([BudgetCallbackHandler(permissive, model="gpt-4o-mini")])
    ENGINES["ContextChatEngine"](MockLLM(max_tokens=5))()
    ENGINES["as_query_engine"](MockLLM(max_tokens=5))()
    assert _requests(permissive) == 2


def test_installed_on_settings_llm_survives_the_settings_getter() -> None:
    """``Settings.llm`` hands the LLM ``Settings.callback_manager`` (here a debug handler's) on
    every read: the installed handler is in it, so ``SimpleChatEngine`` is refused."""
    Settings.callback_manager = CallbackManager([LlamaDebugHandler()])
    llm = MockLLM(max_tokens=5)
    BudgetCallbackHandler(_refusing(), model="gpt-4o-mini").install(llm)
    Settings.llm = llm
    with pytest.raises(BudgetExceededError):
        SimpleChatEngine.from_defaults(memory=_memory()).chat("hi")


def test_a_direct_call_and_an_engine_call_are_each_charged_once() -> None:
    ledger = Ledger("memory://")
    llm = MockLLM(max_tokens=5)
    handler = BudgetCallbackHandler(ledger, model="gpt-4o-mini")
    handler.install(llm)
    handler.install(llm)  # twice: still listed once
    assert [h for h in llm.callback_manager.handlers if h is handler] == [handler]
    assert [h for h in Settings.callback_manager.handlers if h is handler] == [handler]
    llm.complete("Say hi")
    assert _requests(ledger) == 1
    SummaryIndex([Document(text="Paris.")]).as_query_engine(llm=llm).query("Where?")
    assert _requests(ledger) == 2
    [row] = ledger.store.rollup([ledger.day()])
    assert row.values["output_tokens"] == 10


def test_uninstall_removes_it_everywhere() -> None:
    ledger = _refusing()
    llm = MockLLM(max_tokens=5)
    handler = BudgetCallbackHandler(ledger, model="gpt-4o-mini").install(llm)
    assert handler.uninstall(llm) is handler
    assert handler not in llm.callback_manager.handlers
    assert handler not in Settings.callback_manager.handlers
    assert llm.complete("hi").text  # no longer checked


def test_install_refuses_what_is_not_an_llm_naming_it() -> None:
    handler = BudgetCallbackHandler(Ledger("memory://"), model="gpt-4o-mini")
    with pytest.raises(InvalidInputError) as caught:
        handler.install(MockLLM(), "gpt-4o")  # type: ignore[arg-type]
    assert caught.value.field == "llms[1]"
    assert "install(llm" in (caught.value.fix or "")
    assert handler not in Settings.callback_manager.handlers  # nothing half-done


def test_docs_name_settings_callback_manager_and_the_synthesizer_override() -> None:
    doc = BudgetCallbackHandler.__doc__ or ""
    readme = (ROOT / "README.md").read_text()
    for text in (doc, readme):
        assert "Settings.callback_manager" in text
        assert "BaseSynthesizer" in text
        assert "install(" in text
    assert "MockLLM(max_tokens=5, callback_manager=CallbackManager([handler]))" not in doc
