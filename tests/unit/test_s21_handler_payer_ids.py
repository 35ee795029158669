"""Payer ids in a LangChain run's metadata that are not strings (review s21, handler finding 2): a
``uuid.UUID`` is the id ``str(uuid)``; any other type (float, bytes, tuple, bool...) stops the call
with an ``InvalidInputError`` naming the metadata key and the fix, never a silent anonymous payer.
Real LangChain runs on a fake chat model, checked against a real memory ledger."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableConfig

from langchain_tokenbudget import AsyncBudgetCallbackHandler, BudgetCallbackHandler
from tokenbudget_core.budgets import BudgetPolicy, FeatureBudget
from tokenbudget_core.errors import BudgetExceededError, InvalidInputError
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report

HANDLERS = [BudgetCallbackHandler, AsyncBudgetCallbackHandler]
USAGE = UsageMetadata(input_tokens=100, output_tokens=20, total_tokens=120)


class Model(GenericFakeChatModel):
    """A fake gpt-4o answering every call with 100 input / 20 output tokens; counts its calls."""

    model_name: str = "gpt-4o"
    messages: Any = None
    calls: int = 0

    def _generate(self, messages: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        self.messages = iter([AIMessage("ok", usage_metadata=USAGE)])
        return super()._generate(messages, *args, **kwargs)

    def _stream(self, messages: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        yield ChatGenerationChunk(message=AIMessageChunk("ok", usage_metadata=USAGE))

    async def _astream(self, messages: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        yield ChatGenerationChunk(message=AIMessageChunk("ok", usage_metadata=USAGE))


def rows(ledger: Ledger) -> dict[str, int]:
    return {
        r.rollup_key: r.values["requests"]
        for r in ledger.store.rollup([ledger.day()])
        if r.values.get("requests")
    }


def call(runnable: Any, how: str, value: Any, config: RunnableConfig) -> None:
    if how == "invoke":
        runnable.invoke(value, config=config)
    elif how == "ainvoke":
        asyncio.run(runnable.ainvoke(value, config=config))
    else:
        list(runnable.stream(value, config=config))


ALICE, BOB = uuid.UUID(int=7), uuid.UUID(int=8)


@pytest.mark.parametrize("handler_class", HANDLERS)
@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream"])
def test_a_uuid_user_id_in_metadata_is_the_user_str_uuid(
    tmp_path: Path, handler_class: type, how: str
) -> None:
    """Each UUID-identified user has a budget of their own: alice spending hers does not refuse bob."""
    policy = BudgetPolicy(features={"chat": FeatureBudget(user_daily_usd="0.0006")})
    ledger = Ledger("memory://", policy=policy, spool_path=tmp_path / "spool.jsonl")
    handler = handler_class(ledger, feature="chat", max_output_tokens=20)
    model = Model()
    call(model, how, "hi", {"callbacks": [handler], "metadata": {"user_id": ALICE}})
    with pytest.raises(BudgetExceededError):  # alice has spent her budget (at least half of it)
        call(model, how, "hi", {"callbacks": [handler], "metadata": {"user_id": ALICE}})
    call(model, how, "hi", {"callbacks": [handler], "metadata": {"user_id": BOB}})  # bob: not refused
    assert set(rows(ledger)) == {f"chat/{ALICE}/gpt-4o", f"chat/{BOB}/gpt-4o"}
    assert ledger.state(feature="chat", user=str(ALICE)).used
    assert handler._runs == {}


@pytest.mark.parametrize("handler_class", HANDLERS)
def test_a_uuid_thread_id_is_the_conversation(tmp_path: Path, handler_class: type) -> None:
    ledger = Ledger("memory://", spool_path=tmp_path / "spool.jsonl")
    handler = handler_class(ledger)
    thread = uuid.uuid4()
    Model().invoke("hi", config={"callbacks": [handler], "metadata": {"thread_id": thread, "user": 42}})
    assert rows(ledger) == {"/42/gpt-4o": 1}
    assert build_report(ledger).totals.conversations == 1


BAD_IDS = [4.0, b"u-1", ("u", 1), True, {"id": "u-1"}]


@pytest.mark.parametrize("handler_class", HANDLERS)
@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream"])
@pytest.mark.parametrize("bad", BAD_IDS, ids=lambda v: type(v).__name__)
@pytest.mark.parametrize("key", ["user_id", "tokenbudget_feature", "thread_id"])
def test_any_other_payer_id_type_in_metadata_stops_the_call_naming_key_and_fix(
    tmp_path: Path, handler_class: type, how: str, bad: object, key: str
) -> None:
    ledger = Ledger("memory://", spool_path=tmp_path / "spool.jsonl")
    handler = handler_class(ledger, feature="chat", user="default-user")
    model = Model()
    with pytest.raises(InvalidInputError) as raised:
        call(model, how, "hi", {"callbacks": [handler], "metadata": {key: bad}})
    assert raised.value.field == f"metadata.{key}"
    assert "str(" in str(raised.value)
    assert model.calls == 0  # not sent
    assert rows(ledger) == {}  # nothing charged, to the anonymous user or anyone
    assert handler._runs == {}


@pytest.mark.parametrize("handler_class", HANDLERS)
@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream"])
def test_a_bad_payer_id_in_an_outer_chains_metadata_stops_the_chain(
    tmp_path: Path, handler_class: type, how: str
) -> None:
    ledger = Ledger("memory://", spool_path=tmp_path / "spool.jsonl")
    handler = handler_class(ledger)
    model = Model()
    chain = ChatPromptTemplate.from_messages([("user", "{q}")]) | model
    with pytest.raises(InvalidInputError) as raised:
        call(chain, how, {"q": "hi"}, {"callbacks": [handler], "metadata": {"user": 3.5}})
    assert raised.value.field == "metadata.user"
    assert model.calls == 0
    assert rows(ledger) == {}


@pytest.mark.parametrize("handler_class", HANDLERS)
def test_string_int_and_empty_ids_are_read_as_before(tmp_path: Path, handler_class: type) -> None:
    ledger = Ledger("memory://", spool_path=tmp_path / "spool.jsonl")
    handler = handler_class(ledger, feature="chat")
    model = Model()
    for user in ("u-1", 42, ""):
        model.invoke("hi", config={"callbacks": [handler], "metadata": {"user_id": user}})
    assert rows(ledger) == {"chat/u-1/gpt-4o": 1, "chat/42/gpt-4o": 1, "chat//gpt-4o": 1}
