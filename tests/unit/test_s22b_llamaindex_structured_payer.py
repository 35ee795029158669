"""A ``StructuredLLM`` seen by two ``BudgetCallbackHandler`` s of one ledger (one in ``Settings``,
one on its inner LLM) is charged as its inner LLM's handler would charge a call made where the
``StructuredLLM`` was called: the ``attribute()`` block in force there first, then the inner
handler's own ``feature`` / ``user`` -- not the ``Settings`` handler's (review s22b 6b).
Real LlamaIndex wrappers and ``StructuredLLM``; the model is the JSON-answering ``CustomLLM`` of
``test_llamaindex_structured_llm``.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from llama_index.core import Settings
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.callbacks import CallbackManager
from test_llamaindex_structured_llm import MODEL, JsonChat, Person

from llamaindex_tokenbudget import BudgetCallbackHandler
from tokenbudget_core import attribute
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.ledger import Ledger


def charged(how: str, block: dict[str, str] | None) -> list[tuple[str, int, int]]:
    """Rollup rows (key, requests, conversations) of one ``how`` call of a StructuredLLM whose
    Settings handler names feature "app" and whose inner LLM's handler names feature "extract"
    and user "svc", made inside ``attribute(**block)`` (or no block)."""
    ledger = Ledger("memory://", policy=BudgetPolicy(daily_usd=Decimal("1")))
    before = Settings._callback_manager
    Settings.callback_manager = CallbackManager([BudgetCallbackHandler(ledger, feature="app")])
    try:
        inner = BudgetCallbackHandler(ledger, feature="extract", user="svc")
        structured = JsonChat(callback_manager=CallbackManager([inner])).as_structured_llm(Person)
        messages = [ChatMessage(role="user", content="Give me a person")]
        with attribute(**(block or {})):
            if how == "chat":
                structured.chat(messages)
            else:
                *_, _reply = structured.stream_chat(messages)
    finally:
        Settings._callback_manager = before
    rows = ledger.store.rollup([ledger.day()])
    return [(r.rollup_key, int(r.values["requests"]), int(r.values.get("conversations", 0))) for r in rows]


@pytest.mark.filterwarnings("ignore:The `json` method is deprecated")  # StructuredLLM.stream_chat's own
@pytest.mark.parametrize("how", ["chat", "stream_chat"])
def test_the_inner_llms_own_handler_names_the_feature_not_the_settings_handler(how: str) -> None:
    assert charged(how, None) == [(f"extract/svc/{MODEL}", 1, 0)]


@pytest.mark.filterwarnings("ignore:The `json` method is deprecated")
@pytest.mark.parametrize("how", ["chat", "stream_chat"])
def test_the_callers_block_comes_first_then_the_inner_handlers_defaults(how: str) -> None:
    assert charged(how, {"user": "alice", "conversation": "c-1"}) == [(f"extract/alice/{MODEL}", 1, 1)]
    assert charged(how, {"feature": "caller"}) == [(f"caller/svc/{MODEL}", 1, 0)]
