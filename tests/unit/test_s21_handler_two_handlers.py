"""Two budget handlers on one ledger that see the same LangChain call charge it once, whatever
their options or the payer each resolves (review s21, handler finding 1). Real LangChain runs on
a fake chat model that reports its usage, checked against a real memory ledger."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableConfig

from langchain_tokenbudget import AsyncBudgetCallbackHandler, BudgetCallbackHandler
from tokenbudget_core import Usage, cost_of
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report

HANDLERS = [BudgetCallbackHandler, AsyncBudgetCallbackHandler]
ONE_CALL = cost_of(Usage(input_tokens=100, output_tokens=20), "gpt-4o")


class Model(GenericFakeChatModel):
    """A fake gpt-4o that answers every call with 100 input / 20 output tokens reported."""

    model_name: str = "gpt-4o"
    messages: Any = None

    def _generate(self, messages: Any, *args: Any, **kwargs: Any) -> Any:
        self.messages = iter([AIMessage("ok", usage_metadata=_usage())])
        return super()._generate(messages, *args, **kwargs)

    def _stream(self, messages: Any, *args: Any, **kwargs: Any) -> Any:
        self.messages = iter([AIMessage("ok", usage_metadata=_usage())])
        return super()._stream(messages, *args, **kwargs)

    async def _astream(self, messages: Any, *args: Any, **kwargs: Any) -> Any:
        self.messages = iter([AIMessage("ok", usage_metadata=_usage())])
        async for chunk in super()._astream(messages, *args, **kwargs):
            yield chunk


def _usage() -> Any:
    return {"input_tokens": 100, "output_tokens": 20, "total_tokens": 120}


def requests(ledger: Ledger) -> dict[str, int]:
    """Requests charged per ``feature/user/model`` row."""
    out = {}
    for r in ledger.store.rollup([ledger.day()]):
        if r.values.get("requests"):
            out[r.rollup_key] = r.values["requests"]
    return out


def spent(ledger: Ledger) -> Decimal:
    return build_report(ledger).totals.cost_usd


def call(runnable: Any, how: str, value: Any, config: RunnableConfig) -> None:
    if how == "invoke":
        runnable.invoke(value, config=config)
    elif how == "ainvoke":
        asyncio.run(runnable.ainvoke(value, config=config))
    else:
        list(runnable.stream(value, config=config))


OPTIONS = [
    pytest.param({"feature": "chat"}, {}, id="feature"),
    pytest.param({"max_output_tokens": 100}, {"max_output_tokens": 200}, id="max_output_tokens"),
    pytest.param({"model": "gpt-4o"}, {}, id="model"),
    pytest.param({"user": "u-1"}, {"user": "u-2"}, id="user"),
]


@pytest.mark.parametrize("handler_class", HANDLERS)
@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream"])
@pytest.mark.parametrize(("on_model_options", "per_call_options"), OPTIONS)
def test_two_handlers_with_different_options_charge_one_call_once(
    tmp_path: Path,
    handler_class: type,
    how: str,
    on_model_options: dict[str, Any],
    per_call_options: dict[str, Any],
) -> None:
    ledger = Ledger("memory://", spool_path=tmp_path / "spool.jsonl")
    on_model = handler_class(ledger, **on_model_options)  # app-wide, on the model
    per_call = handler_class(ledger, **per_call_options)  # per request, in the run's config
    call(Model(callbacks=[on_model]), how, "hi", {"callbacks": [per_call]})
    assert sum(requests(ledger).values()) == 1
    alone = Ledger("memory://", spool_path=tmp_path / "alone.jsonl")  # the same call, one handler
    call(Model(callbacks=[handler_class(alone, **on_model_options)]), how, "hi", {})
    assert spent(ledger) == spent(alone) == (ONE_CALL if how != "stream" else spent(alone))
    assert on_model._runs == per_call._runs == {}


@pytest.mark.parametrize("handler_class", HANDLERS)
@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream"])
def test_the_second_handler_holds_no_second_worst_case(tmp_path: Path, handler_class: type, how: str) -> None:
    """While the call runs, its worst case is held once: a budget that holds one call's worst
    case (a few input tokens + 60 or 50 output) but not two is not refused because two handlers
    with different options see the call."""
    policy = BudgetPolicy(user_daily_tokens=100)
    ledger = Ledger("memory://", policy=policy, spool_path=tmp_path / "spool.jsonl")
    on_model = handler_class(ledger, user="u", max_output_tokens=60)
    per_call = handler_class(ledger, user="u", max_output_tokens=50)
    call(Model(callbacks=[on_model]), how, "hi", {"callbacks": [per_call]})
    assert requests(ledger) == {"/u/gpt-4o": 1}


@pytest.mark.parametrize("handler_class", HANDLERS)
@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream"])
def test_same_options_but_an_outer_chain_only_one_handler_sees_charge_once(
    tmp_path: Path, handler_class: type, how: str
) -> None:
    """The handler in the config sees the outer chain (feature ``support``: outer wins); the
    model's own handler sees only the model run (its metadata: ``summarise``). One charge, on the
    outer chain's payer (the config's handlers start first)."""
    ledger = Ledger("memory://", spool_path=tmp_path / "spool.jsonl")
    on_model, in_config = handler_class(ledger), handler_class(ledger)
    model = Model(callbacks=[on_model], metadata={"feature": "summarise"})
    chain = ChatPromptTemplate.from_messages([("user", "{q}")]) | model
    config: RunnableConfig = {"callbacks": [in_config], "metadata": {"feature": "support", "user_id": "u1"}}
    call(chain, how, {"q": "hi"}, config)
    assert requests(ledger) == {"support/u1/gpt-4o": 1}
    assert on_model._runs == in_config._runs == {}


@pytest.mark.parametrize("handler_class", HANDLERS)
@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream"])
def test_a_reused_run_id_is_still_another_call_for_two_handlers_with_different_options(
    tmp_path: Path, handler_class: type, how: str
) -> None:
    """A ``config["run_id"]`` reused by later calls names calls settled already: each later
    call is charged once (under ``<run id>#1``, ``#2``), by one of the two handlers."""
    ledger = Ledger("memory://", spool_path=tmp_path / "spool.jsonl")
    on_model = handler_class(ledger, feature="chat")
    per_call = handler_class(ledger, max_output_tokens=64)
    model = Model(callbacks=[on_model])
    config: RunnableConfig = {"callbacks": [per_call], "run_id": uuid.uuid4()}
    for n in range(1, 4):
        call(model, how, f"question {n}", config)
        assert sum(requests(ledger).values()) == n
    assert on_model._runs == per_call._runs == {}
