"""An LLM that answers with its own provider call and merely holds another LLM in a field (a
fallback it calls only on error, a judge, a helper) is charged to, and gated on, the handler of
its own call (review s23 fix #1, a regression of a1c89d9 / 6b7664e): only a ``StructuredLLM``
(whose provider call the LLM it wraps makes) is charged to the handler of the LLM it wraps.
Before, such an LLM's call was reserved on the held LLM's handler's feature, charged there and
refused by that feature's budget.

Real LlamaIndex wrappers; the model is the usage-reporting ``CustomLLM`` of
``test_s22_llamaindex_routed_astream``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from llama_index.core.bridge.pydantic import Field
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms import LLM
from test_s22_llamaindex_routed_astream import UsageLLM

from llamaindex_tokenbudget import BudgetCallbackHandler
from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget
from tokenbudget_core.ledger import Ledger


class WithFallback(UsageLLM):
    """Answers with its own call; keeps a fallback LLM it never calls here."""

    fallback: LLM | None = None


class WithAnyHelper(UsageLLM):
    """Answers with its own call; keeps a helper in a field annotated ``Any``."""

    helper: Any = None


class WithJudges(UsageLLM):
    """Answers with its own call; keeps LLMs by name (judges it may call later)."""

    judges: dict[str, LLM] = Field(default_factory=dict)


def rows(ledger: Ledger) -> dict[str, int]:
    return {r.rollup_key: int(r.values["requests"]) for r in ledger.store.rollup([ledger.day()])}


def holding(kind: str, held: LLM, manager: CallbackManager) -> LLM:
    if kind == "fallback":
        return WithFallback(model_name="gpt-4o", fallback=held, callback_manager=manager)
    if kind == "any":
        return WithAnyHelper(model_name="gpt-4o", helper=held, callback_manager=manager)
    return WithJudges(model_name="gpt-4o", judges={"polite": held}, callback_manager=manager)


@pytest.mark.parametrize("kind", ["fallback", "any", "judges"])
def test_an_llm_holding_an_llm_it_does_not_call_is_charged_to_its_own_handler(kind: str) -> None:
    ledger = Ledger("memory://")
    held = UsageLLM(
        model_name="gpt-4o-mini",
        callback_manager=CallbackManager([BudgetCallbackHandler(ledger, feature="fallback")]),
    )
    llm = holding(kind, held, CallbackManager([BudgetCallbackHandler(ledger, feature="app")]))
    llm.complete("hello")
    assert rows(ledger) == {"app//gpt-4o": 1}


@pytest.mark.parametrize("kind", ["fallback", "any", "judges"])
def test_the_held_llms_feature_budget_does_not_refuse_the_call(kind: str) -> None:
    # the "fallback" feature's budget fits a gpt-4o-mini call, not a gpt-4o one
    policy = BudgetPolicy(features={"fallback": FeatureBudget(feature_daily_usd=Decimal("0.0001"))})
    ledger = Ledger("memory://", policy=policy)
    held = UsageLLM(
        model_name="gpt-4o-mini",
        callback_manager=CallbackManager([BudgetCallbackHandler(ledger, feature="fallback")]),
    )
    held.complete("hello")
    llm = holding(kind, held, CallbackManager([BudgetCallbackHandler(ledger, feature="app")]))
    llm.complete("hello")  # the app's own call: not gated on the fallback's feature
    assert rows(ledger) == {"fallback//gpt-4o-mini": 1, "app//gpt-4o": 1}
