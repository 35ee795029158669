"""A ``CostEventHandler`` on the dispatcher next to a ``BudgetCallbackHandler`` of the same ledger
charges each call once: a call the budget handler charges (on its LLM, or on the LLM of a call
enclosing it) is left to it. Before, both charged it (2 requests, 222 input tokens for one call
of 111), which the docs only warned about.

Real LlamaIndex dispatcher, wrappers and ``StructuredLLM``; the model is the JSON-answering
``CustomLLM`` of ``test_llamaindex_structured_llm`` (111 input, 7 output tokens per call).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal

import pytest
from llama_index.core import Settings
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.callbacks import CallbackManager
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.llms import LLM
from test_llamaindex_structured_llm import MODEL, JsonChat, Person

from llamaindex_tokenbudget import BudgetCallbackHandler, CostEventHandler
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.ledger import Ledger

MESSAGES = [ChatMessage(role="user", content="Give me a person, a real one with a full name please")]
HOWS = ["chat", "stream_chat", "complete", "achat", "astream_chat"]
ONE_CALL = (1, 111, 7)

pytestmark = pytest.mark.filterwarnings("ignore:The `json` method is deprecated")  # StructuredLLM's own


@pytest.fixture
def settings_manager() -> Iterator[None]:
    before = Settings._callback_manager
    try:
        yield
    finally:
        Settings._callback_manager = before


@pytest.fixture
def ledger() -> Iterator[Ledger]:
    """A ledger with a ``CostEventHandler`` (feature "recorded") on the root dispatcher."""
    ledger = Ledger("memory://", policy=BudgetPolicy(daily_usd=Decimal("1")))
    handler = CostEventHandler(ledger, feature="recorded")
    get_dispatcher().add_event_handler(handler)
    try:
        yield ledger
    finally:
        get_dispatcher().event_handlers.remove(handler)


def call(llm: LLM, how: str) -> None:
    if how == "chat":
        llm.chat(MESSAGES)
    elif how == "stream_chat":
        *_, _last = llm.stream_chat(MESSAGES)
    elif how == "complete":
        llm.complete("Give me a person, a real one with a full name please")
    elif how == "achat":
        asyncio.run(llm.achat(MESSAGES))
    else:

        async def read() -> None:
            async for _chunk in await llm.astream_chat(MESSAGES):
                pass

        asyncio.run(read())


def charged(ledger: Ledger) -> dict[str, tuple[int, int, int]]:
    """Per rollup key: requests, input and output tokens; nothing may be left held."""
    rows = ledger.store.rollup([ledger.day()])
    cost = sum(Decimal(int(r.values["cost_nanos"])) for r in rows) / Decimal(10**9)
    assert ledger.state().used["daily_usd"] == cost
    return {
        r.rollup_key: (
            int(r.values["requests"]),
            int(r.values["input_tokens"]),
            int(r.values["output_tokens"]),
        )
        for r in rows
    }


@pytest.mark.parametrize("how", HOWS)
def test_a_call_the_budget_handler_charges_is_not_recorded_again(ledger: Ledger, how: str) -> None:
    budget = BudgetCallbackHandler(ledger, feature="budgeted")
    call(JsonChat(callback_manager=CallbackManager([budget])), how)
    assert charged(ledger) == {f"budgeted//{MODEL}": ONE_CALL}


@pytest.mark.parametrize("how", HOWS)
def test_an_inner_call_charged_by_its_own_budget_handler(ledger: Ledger, how: str) -> None:
    """The ``StructuredLLM`` has no budget handler: its inner LLM's charges the one call."""
    inner = JsonChat(callback_manager=CallbackManager([BudgetCallbackHandler(ledger, feature="budgeted")]))
    call(inner.as_structured_llm(Person), how)
    assert charged(ledger) == {f"budgeted//{MODEL}": ONE_CALL}


@pytest.mark.parametrize("how", ["chat", "achat"])
def test_an_inner_call_of_a_call_the_settings_budget_handler_charges(
    settings_manager: None, ledger: Ledger, how: str
) -> None:
    """The inner LLM has no budget handler: the ``Settings`` one charges the ``StructuredLLM``'s
    call (its estimate, the provider call it made): the inner call is not recorded on top."""
    inner = JsonChat()  # made before Settings has a manager: none of its handlers
    Settings.callback_manager = CallbackManager([BudgetCallbackHandler(ledger, feature="budgeted")])
    call(inner.as_structured_llm(Person), how)
    [(key, (requests, _input, _output))] = charged(ledger).items()
    assert (key, requests) == (f"budgeted//{MODEL}", 1)


@pytest.mark.parametrize("how", HOWS)
def test_with_no_budget_handler_the_call_is_still_recorded(ledger: Ledger, how: str) -> None:
    call(JsonChat().as_structured_llm(Person), how)
    assert charged(ledger) == {f"recorded//{MODEL}": ONE_CALL}


def test_a_budget_handler_of_another_ledger_leaves_it_recorded_here(ledger: Ledger) -> None:
    other = Ledger("memory://", policy=BudgetPolicy(daily_usd=Decimal("1")))
    call(JsonChat(callback_manager=CallbackManager([BudgetCallbackHandler(other, feature="b")])), "chat")
    assert charged(ledger) == {f"recorded//{MODEL}": ONE_CALL}
    assert charged(other) == {f"b//{MODEL}": ONE_CALL}
