"""A ``StructuredLLM`` call charged to its inner LLM's own budget handler is also gated by that
handler's budgets, not by the budgets of the ``Settings`` handler its own events reach (review
s22c #2): one gate, on the payer that is charged.

Real LlamaIndex wrappers and ``StructuredLLM``; the model is the JSON-answering ``CustomLLM`` of
``test_llamaindex_structured_llm`` (111 input tokens reported per call).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal

import pytest
from llama_index.core import Settings
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms import LLM
from test_llamaindex_structured_llm import MODEL, JsonChat, Person

from llamaindex_tokenbudget import BudgetCallbackHandler, CachedLLM
from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget
from tokenbudget_core.errors import BudgetExceededError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.response_cache import ExactCache

MESSAGES = [ChatMessage(role="user", content="Give me a person, a real one with a full name please")]


@pytest.fixture
def settings_manager() -> Iterator[None]:
    before = Settings._callback_manager
    try:
        yield
    finally:
        Settings._callback_manager = before


def call(llm: LLM, how: str) -> None:
    if how == "chat":
        llm.chat(MESSAGES)
    elif how == "stream_chat":
        *_, _last = llm.stream_chat(MESSAGES)
    elif how == "complete":
        llm.complete("Give me a person, a real one with a full name please")
    else:
        asyncio.run(llm.achat(MESSAGES))


def rows(ledger: Ledger) -> list[tuple[str, int]]:
    return [(r.rollup_key, int(r.values["requests"])) for r in ledger.store.rollup([ledger.day()])]


def setup(capped: str) -> tuple[Ledger, LLM]:
    """A StructuredLLM whose events reach the Settings handler (feature "app") around an LLM whose
    own handler names feature "extract", user "svc"; ``capped`` allows 5 input tokens a call."""
    policy = BudgetPolicy(
        daily_usd=Decimal("1"), features={capped: FeatureBudget(max_input_tokens_per_call=5)}
    )
    ledger = Ledger("memory://", policy=policy)
    Settings.callback_manager = CallbackManager([BudgetCallbackHandler(ledger, feature="app")])
    inner = BudgetCallbackHandler(ledger, feature="extract", user="svc")
    return ledger, JsonChat(callback_manager=CallbackManager([inner])).as_structured_llm(Person)


@pytest.mark.filterwarnings("ignore:The `json` method is deprecated")  # StructuredLLM.stream_chat's own
@pytest.mark.parametrize("how", ["chat", "stream_chat", "complete", "achat"])
def test_the_settings_handlers_feature_budget_does_not_refuse_a_call_it_does_not_pay(
    settings_manager: None, how: str
) -> None:
    ledger, structured = setup("app")
    call(structured, how)
    assert rows(ledger) == [(f"extract/svc/{MODEL}", 1)]


@pytest.mark.filterwarnings("ignore:The `json` method is deprecated")
@pytest.mark.parametrize("how", ["chat", "stream_chat", "complete", "achat"])
def test_the_paying_features_budget_refuses_it(settings_manager: None, how: str) -> None:
    ledger, structured = setup("extract")
    with pytest.raises(BudgetExceededError, match="feature=extract"):
        call(structured, how)
    assert rows(ledger) == []


def test_an_inner_llm_charged_by_the_settings_handler_is_gated_by_its_feature(settings_manager: None) -> None:
    policy = BudgetPolicy(
        daily_usd=Decimal("1"), features={"app": FeatureBudget(max_input_tokens_per_call=5)}
    )
    ledger = Ledger("memory://", policy=policy)
    Settings.callback_manager = CallbackManager([BudgetCallbackHandler(ledger, feature="app")])
    structured = JsonChat().as_structured_llm(Person)  # its own manager: the Settings handler's
    with pytest.raises(BudgetExceededError, match="feature=app"):
        structured.chat(MESSAGES)
    assert rows(ledger) == []


def test_through_a_cached_llm_the_wrapped_llms_handler_is_the_gate(settings_manager: None) -> None:
    policy = BudgetPolicy(
        daily_usd=Decimal("1"), features={"app": FeatureBudget(max_input_tokens_per_call=5)}
    )
    ledger = Ledger("memory://", policy=policy)
    Settings.callback_manager = CallbackManager([BudgetCallbackHandler(ledger, feature="app")])
    inner = BudgetCallbackHandler(ledger, feature="extract", user="svc")
    cached = CachedLLM(JsonChat(callback_manager=CallbackManager([inner])), ExactCache("memory://"))
    cached.as_structured_llm(Person).chat(MESSAGES)
    assert rows(ledger) == [(f"extract/svc/{MODEL}", 1)]
