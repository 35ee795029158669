"""Two ``BudgetCallbackHandler``s of one ledger seeing the same LlamaIndex call charge it once
(the rule the LangChain handler keeps): the handler listed first on the callback manager that
starts the event reserves, gates and charges it; the others leave it to it.

Before: an enclosing call (a ``StructuredLLM``'s) seen by two handlers of one ledger (two in
``Settings``) was delegated to its inner LLM's handler in one of them only, so the other charged
the enclosing call's estimate on top of the inner call's usage (2 requests, 131 input tokens for
a call of 111); and two handlers with different defaults (``feature=``) on one LLM made the
ledger refuse the second reserve under the live id: the call failed with ``InvalidInputError``.

Real LlamaIndex wrappers, ``StructuredLLM``, ``CachedLLM`` and ``RoutedLLM``; the model is the
JSON-answering ``CustomLLM`` of ``test_llamaindex_structured_llm`` (111 input and 7 output
tokens reported per call) and LlamaIndex's ``MockLLM``; real ledgers (memory and SQLite).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from llama_index.core import Settings
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms import LLM, MockLLM
from test_llamaindex_structured_llm import MODEL, JsonChat, Person

from llamaindex_tokenbudget import BudgetCallbackHandler, CachedLLM, RoutedLLM
from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget
from tokenbudget_core.errors import BudgetExceededError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.response_cache import ExactCache

MESSAGES = [ChatMessage(role="user", content="Give me a person, a real one with a full name please")]
HOWS = ["chat", "stream_chat", "complete", "achat", "astream_chat"]
ONE_CALL = (1, 111, 7)
"""requests, input and output tokens of one call of ``JsonChat`` (the provider's usage)."""

pytestmark = pytest.mark.filterwarnings("ignore:The `json` method is deprecated")  # StructuredLLM's own


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
    elif how == "achat":
        asyncio.run(llm.achat(MESSAGES))
    else:

        async def read() -> None:
            async for _chunk in await llm.astream_chat(MESSAGES):
                pass

        asyncio.run(read())


def charged(ledger: Ledger) -> dict[str, tuple[int, int, int]]:
    """Per rollup key: requests, input and output tokens; and nothing may be left held."""
    rows = ledger.store.rollup([ledger.day()])
    cost = sum(Decimal(int(r.values["cost_nanos"])) for r in rows) / Decimal(10**9)
    assert ledger.state().used["daily_usd"] == cost  # no hold left behind
    return {
        r.rollup_key: (
            int(r.values["requests"]),
            int(r.values["input_tokens"]),
            int(r.values["output_tokens"]),
        )
        for r in rows
    }


def ledger_on(store: str, tmp_path: Path, policy: BudgetPolicy | None = None) -> Ledger:
    url = f"sqlite:///{tmp_path / 'ledger.db'}" if store == "sqlite" else "memory://"
    return Ledger(url, policy=policy or BudgetPolicy(daily_usd=Decimal("1")))


@pytest.mark.parametrize("store", ["memory", "sqlite"])
@pytest.mark.parametrize("how", HOWS)
def test_a_structured_call_whose_events_reach_two_handlers_of_the_ledger_is_charged_once(
    settings_manager: None, tmp_path: Path, how: str, store: str
) -> None:
    ledger = ledger_on(store, tmp_path)
    Settings.callback_manager = CallbackManager(
        [BudgetCallbackHandler(ledger, feature="app"), BudgetCallbackHandler(ledger, feature="app")]
    )
    inner = JsonChat(callback_manager=CallbackManager([BudgetCallbackHandler(ledger, feature="extract")]))
    call(inner.as_structured_llm(Person), how)
    assert charged(ledger) == {f"extract//{MODEL}": ONE_CALL}  # not the StructuredLLM's estimate too


@pytest.mark.parametrize("how", HOWS)
def test_through_a_cached_llm_too(settings_manager: None, tmp_path: Path, how: str) -> None:
    ledger = ledger_on("memory", tmp_path)
    Settings.callback_manager = CallbackManager(
        [BudgetCallbackHandler(ledger), BudgetCallbackHandler(ledger)]
    )
    inner = JsonChat(callback_manager=CallbackManager([BudgetCallbackHandler(ledger, feature="extract")]))
    call(CachedLLM(inner, ExactCache("memory://")).as_structured_llm(Person), how)
    assert charged(ledger) == {f"extract//{MODEL}": ONE_CALL}


@pytest.mark.parametrize("how", HOWS)
def test_two_handlers_with_different_defaults_on_one_llm_charge_the_first_ones_payer(
    tmp_path: Path, how: str
) -> None:
    ledger = ledger_on("memory", tmp_path)
    first, second = (
        BudgetCallbackHandler(ledger, feature="a"),
        BudgetCallbackHandler(ledger, feature="b", user="u"),
    )
    call(JsonChat(callback_manager=CallbackManager([first, second])), how)  # not refused
    assert charged(ledger) == {f"a//{MODEL}": ONE_CALL}


@pytest.mark.parametrize("how", ["chat", "achat"])
def test_the_first_handlers_budgets_gate_the_call(tmp_path: Path, how: str) -> None:
    policy = BudgetPolicy(daily_usd=Decimal("1"), features={"a": FeatureBudget(max_input_tokens_per_call=5)})
    ledger = ledger_on("memory", tmp_path, policy)
    handlers = [BudgetCallbackHandler(ledger, feature="a"), BudgetCallbackHandler(ledger, feature="b")]
    with pytest.raises(BudgetExceededError, match="feature=a"):
        call(JsonChat(callback_manager=CallbackManager(handlers)), how)
    assert charged(ledger) == {}
    call(JsonChat(callback_manager=CallbackManager(handlers[::-1])), how)  # "b" first: it pays
    assert charged(ledger) == {f"b//{MODEL}": ONE_CALL}


def test_different_defaults_on_an_inner_llm_behind_a_structured_llm(
    settings_manager: None, tmp_path: Path
) -> None:
    ledger = ledger_on("memory", tmp_path)
    Settings.callback_manager = CallbackManager([BudgetCallbackHandler(ledger, feature="app")])
    inner = JsonChat(
        callback_manager=CallbackManager(
            [BudgetCallbackHandler(ledger, feature="x"), BudgetCallbackHandler(ledger, feature="y")]
        )
    )
    call(inner.as_structured_llm(Person), "chat")
    assert charged(ledger) == {f"x//{MODEL}": ONE_CALL}


@pytest.mark.parametrize("second", ["a", None])  # alike (charged once before too), or not
@pytest.mark.parametrize("how", HOWS)
def test_a_mock_llm_whose_chat_calls_complete_seen_by_two_handlers(
    tmp_path: Path, how: str, second: str | None
) -> None:
    ledger = ledger_on("memory", tmp_path)
    one = Ledger("memory://", policy=BudgetPolicy(daily_usd=Decimal("1")))
    two = [
        BudgetCallbackHandler(ledger, model=MODEL, feature="a"),
        BudgetCallbackHandler(ledger, model=MODEL, feature=second),
    ]
    call(MockLLM(max_tokens=5, callback_manager=CallbackManager(two)), how)
    call(
        MockLLM(
            max_tokens=5,
            callback_manager=CallbackManager([BudgetCallbackHandler(one, model=MODEL, feature="a")]),
        ),
        how,
    )
    assert charged(ledger) == charged(one)  # as one handler charges it: one estimated call
    assert charged(ledger)[f"a//{MODEL}"][0] == 1


# Setups that charged once before the fix already: pinned.


@pytest.mark.parametrize("how", HOWS)
def test_two_alike_handlers_on_one_llm(tmp_path: Path, how: str) -> None:
    ledger = ledger_on("memory", tmp_path)
    call(
        JsonChat(
            callback_manager=CallbackManager([BudgetCallbackHandler(ledger), BudgetCallbackHandler(ledger)])
        ),
        how,
    )
    assert charged(ledger) == {f"//{MODEL}": ONE_CALL}


@pytest.mark.parametrize("wrap", ["structured", "cached", "routed"])
@pytest.mark.parametrize("how", HOWS)
def test_an_inner_llm_with_two_alike_handlers(
    settings_manager: None, tmp_path: Path, how: str, wrap: str
) -> None:
    ledger = ledger_on("memory", tmp_path)
    Settings.callback_manager = CallbackManager([BudgetCallbackHandler(ledger, feature="app")])
    inner: LLM = JsonChat(
        callback_manager=CallbackManager(
            [BudgetCallbackHandler(ledger, feature="x"), BudgetCallbackHandler(ledger, feature="x")]
        )
    )
    if wrap == "cached":
        inner = CachedLLM(inner, ExactCache("memory://")).as_structured_llm(Person)
    elif wrap == "routed":
        inner = RoutedLLM(tiers={"small": inner}).as_structured_llm(Person)
    else:
        inner = inner.as_structured_llm(Person)
    call(inner, how)
    assert charged(ledger) == {f"x//{MODEL}": ONE_CALL}


@pytest.mark.parametrize("how", ["chat", "achat", "stream_chat"])
def test_a_handler_added_to_an_llm_sharing_the_settings_handlers(
    settings_manager: None, tmp_path: Path, how: str
) -> None:
    """An LLM made with no callback manager shares ``Settings``' handler list: a handler added to
    it joins the ``Settings`` one, and the call (refused before, under the live id) is charged
    once, on the first one's payer."""
    ledger = ledger_on("memory", tmp_path)
    Settings.callback_manager = CallbackManager([BudgetCallbackHandler(ledger, feature="app")])
    llm = JsonChat()
    llm.callback_manager.add_handler(BudgetCallbackHandler(ledger, feature="own"))
    call(llm, how)
    assert charged(ledger) == {f"app//{MODEL}": ONE_CALL}
