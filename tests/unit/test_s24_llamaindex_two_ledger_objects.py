"""Two ``Ledger`` objects on one store are one set of books: LlamaIndex handlers built on them
charge a call seen by both once, as handlers of one ``Ledger`` object do (an app that builds
``Ledger(url)`` in two places, say one for ``Settings`` and one for an LLM of its own).

Before: the handlers told "the same ledger" by object identity, so a ``StructuredLLM`` call whose
events reached a ``Settings`` handler on one ``Ledger(url)`` and its inner LLM's handler on
another ``Ledger(url)`` of the same SQLite file was charged twice (2 requests, the enclosing
call's estimate on top of the inner call's usage). Two ledgers on different stores still keep
books of their own: each charges the call.

Real LlamaIndex ``StructuredLLM``; the model is the JSON-answering ``CustomLLM`` of
``test_llamaindex_structured_llm``; real SQLite and memory ledgers.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from llama_index.core import Settings
from llama_index.core.callbacks import CallbackManager
from test_llamaindex_structured_llm import MODEL, JsonChat, Person
from test_s23b_llamaindex_two_handlers import HOWS, ONE_CALL, call, charged

from llamaindex_tokenbudget import BudgetCallbackHandler, CostEventHandler
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.stores.memory import MemoryStore

pytestmark = pytest.mark.filterwarnings("ignore:The `json` method is deprecated")


@pytest.fixture
def settings_manager() -> Iterator[None]:
    before = Settings._callback_manager
    try:
        yield
    finally:
        Settings._callback_manager = before


def policy() -> BudgetPolicy:
    return BudgetPolicy(daily_usd=Decimal("1"))


@pytest.mark.parametrize("how", HOWS)
def test_two_ledger_objects_on_one_sqlite_file_charge_a_structured_call_once(
    settings_manager: None, tmp_path: Path, how: str
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    outer, inner_ledger = Ledger(url, policy=policy()), Ledger(url, policy=policy())
    Settings.callback_manager = CallbackManager([BudgetCallbackHandler(outer, feature="app")])
    inner = JsonChat(
        callback_manager=CallbackManager([BudgetCallbackHandler(inner_ledger, feature="extract")])
    )
    call(inner.as_structured_llm(Person), how)
    assert charged(outer) == {f"extract//{MODEL}": ONE_CALL}  # not the StructuredLLM's estimate too


def test_the_same_file_named_two_ways_is_one_set_of_books(settings_manager: None, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    outer = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}", policy=policy())
    inner_ledger = Ledger(f"sqlite:///{tmp_path / 'sub' / '..' / 'ledger.db'}", policy=policy())
    assert outer.shares_books_with(inner_ledger)
    assert inner_ledger.shares_books_with(outer)
    Settings.callback_manager = CallbackManager([BudgetCallbackHandler(outer, feature="app")])
    inner = JsonChat(
        callback_manager=CallbackManager([BudgetCallbackHandler(inner_ledger, feature="extract")])
    )
    call(inner.as_structured_llm(Person), "chat")
    assert charged(outer) == {f"extract//{MODEL}": ONE_CALL}


def test_two_ledgers_sharing_one_memory_store_object_are_one_set_of_books(
    settings_manager: None,
) -> None:
    store = MemoryStore()
    outer, inner_ledger = Ledger(store, policy=policy()), Ledger(store, policy=policy())
    Settings.callback_manager = CallbackManager([BudgetCallbackHandler(outer, feature="app")])
    inner = JsonChat(
        callback_manager=CallbackManager([BudgetCallbackHandler(inner_ledger, feature="extract")])
    )
    call(inner.as_structured_llm(Person), "chat")
    assert charged(outer) == {f"extract//{MODEL}": ONE_CALL}


def test_a_cost_event_handler_on_another_ledger_object_of_the_store_leaves_the_call_to_the_budget_handler(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    budgets, events = Ledger(url, policy=policy()), Ledger(url, policy=policy())
    from llama_index.core.instrumentation import get_dispatcher

    dispatcher = get_dispatcher()
    handler = CostEventHandler(events)
    dispatcher.add_event_handler(handler)
    try:
        call(
            JsonChat(callback_manager=CallbackManager([BudgetCallbackHandler(budgets, feature="a")])), "chat"
        )
    finally:
        dispatcher.event_handlers.remove(handler)
    assert charged(budgets) == {f"a//{MODEL}": ONE_CALL}  # once, not 2 requests / 222 input tokens


def test_ledgers_on_two_stores_keep_books_of_their_own(settings_manager: None, tmp_path: Path) -> None:
    outer = Ledger(f"sqlite:///{tmp_path / 'a.db'}", policy=policy())
    inner_ledger = Ledger(f"sqlite:///{tmp_path / 'b.db'}", policy=policy())
    assert not outer.shares_books_with(inner_ledger)
    assert not Ledger("memory://").shares_books_with(Ledger("memory://"))
    inner = JsonChat(
        callback_manager=CallbackManager(
            [BudgetCallbackHandler(outer, feature="a"), BudgetCallbackHandler(inner_ledger, feature="b")]
        )
    )
    call(inner, "chat")
    assert charged(outer) == {f"a//{MODEL}": ONE_CALL}
    assert charged(inner_ledger) == {f"b//{MODEL}": ONE_CALL}


def test_in_memory_sqlite_ledgers_are_books_of_their_own(tmp_path: Path) -> None:
    first, second = (
        Ledger("sqlite:///:memory:", policy=policy()),
        Ledger("sqlite:///:memory:", policy=policy()),
    )
    assert not first.shares_books_with(second)
    assert first.spool.path != second.spool.path  # nor one spool: neither replays the other's lines
    call(
        JsonChat(
            callback_manager=CallbackManager(
                [BudgetCallbackHandler(first, feature="a"), BudgetCallbackHandler(second, feature="b")]
            )
        ),
        "chat",
    )
    assert charged(first) == {f"a//{MODEL}": ONE_CALL}
    assert charged(second) == {f"b//{MODEL}": ONE_CALL}
