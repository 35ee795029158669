"""What ``BudgetMiddleware`` charges for the model runs made inside its model call (review s30):

* finding 2: another model's call made inside it (a guard model a chat model asks first, a
  middleware's own call) never supplies the call's usage or estimate: the call is charged its own
  reply's usage, its own estimate when it was cut off once sent, nothing when its connection was
  refused; the guard is the handler's to charge, on its own model;
* finding 3: a model a middleware listed after it swaps in (``ModelFallbackMiddleware``) is
  charged on its own model, once, with or without a handler of the ledger on the run;
* finding 1: a routed tier attempt cut off once its request went out, before its fallback
  answered, is charged its flagged estimate on its own model, and counted in the run's caps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import ModelFallbackMiddleware
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult

from agent_call_support import ReplyingChatModel, held_and_charged, rows
from langchain_tokenbudget import (
    AsyncBudgetCallbackHandler,
    BudgetCallbackHandler,
    BudgetMiddleware,
    RouterChatModel,
    RoutingMiddleware,
)
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report

GUARD_USAGE = {"input_tokens": 50_000, "output_tokens": 10, "total_tokens": 50_010}
QUESTION = "What is the storage limit on the Team plan?"  # routed to the small tier


def usage(i: int, o: int) -> dict[str, int]:
    return {"input_tokens": i, "output_tokens": o, "total_tokens": i + o}


class Echo(ReplyingChatModel):
    """A chat model that names its model and reports usage, answering "ok" (streamed: one chunk
    carrying the usage, as OpenAI's ``stream_usage`` does)."""

    model_name: str = "gpt-4o-mini"
    i: int = 100
    o: int = 10

    @property
    def _llm_type(self) -> str:
        return "echo"

    def _reply(self) -> AIMessage:
        return AIMessage(
            "ok", usage_metadata=usage(self.i, self.o), response_metadata={"model_name": self.model_name}
        )  # type: ignore[arg-type]


class TimesOut(Echo):
    """Its request went out, its answer never came (a read timeout): the provider bills it."""

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        raise TimeoutError("read timed out")

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        raise TimeoutError("read timed out")


class Refused(Echo):
    """Its connection was refused: nothing was sent, nothing billed."""

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        raise ConnectionRefusedError("connection refused")

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        raise ConnectionRefusedError("connection refused")


class ClaudeGuard(Echo):
    """A Claude guard model: a stream reports usage as langchain-anthropic does (a running total
    on a chunk marked ``model_provider="anthropic"``)."""

    model_name: str = "claude-haiku-4-5"

    def _reply(self) -> AIMessage:
        meta = {"model_provider": "anthropic", "model_name": self.model_name}
        return AIMessage("allowed", usage_metadata=GUARD_USAGE, response_metadata=meta)  # type: ignore[arg-type]


class Guarded(Echo):
    """A chat model that asks a guard model before answering (a call of its own, to another
    model, made inside the agent's model call)."""

    model_name: str = "gpt-4o"
    i: int = 120
    o: int = 3
    fail: str = ""

    def _ask_guard(self) -> None:
        ClaudeGuard().invoke("is this request allowed?")
        if self.fail == "timeout":
            raise TimeoutError("read timed out")
        if self.fail == "refused":
            raise ConnectionRefusedError("connection refused")

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        self._ask_guard()
        return super()._generate(*args, **kwargs)

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        self._ask_guard()
        yield from super()._stream(*args, **kwargs)


CONFIG: dict[str, Any] = {"metadata": {"feature": "f", "user": "u"}}


def run(agent: Any, how: str, handler: Any = None, *, expect: type[BaseException] | None = None) -> Any:
    config = dict(CONFIG)
    if handler is not None:
        config["callbacks"] = [handler]
    payload = {"messages": [("user", QUESTION)]}

    def go() -> Any:
        """The run's output; streamed (``messages`` mode, as agent UIs stream), its final state."""
        if how == "invoke":
            return agent.invoke(payload, config=config)
        if how == "ainvoke":
            return asyncio.run(agent.ainvoke(payload, config=config))
        if how == "stream":
            return [c for m, c in agent.stream(payload, config=config, stream_mode=MODES) if m == "values"][
                -1
            ]
        return asyncio.run(_astream(agent, payload, config))

    if expect is None:
        return go()
    with pytest.raises(expect):
        go()
    return None


MODES = ["messages", "values"]


async def _astream(agent: Any, payload: Any, config: Any) -> Any:
    return [c async for m, c in agent.astream(payload, config=config, stream_mode=MODES) if m == "values"][-1]


def handler_for(ledger: Ledger, how: str) -> Any:
    return (
        AsyncBudgetCallbackHandler(ledger) if how in ("ainvoke", "astream") else BudgetCallbackHandler(ledger)
    )


def ledger_() -> Ledger:
    return Ledger("memory://", policy=BudgetPolicy(user_daily_tokens=10**7))


# -- finding 2: another model's call inside the middleware's call -------------------------------------


@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
@pytest.mark.parametrize("with_handler", [False, True])
def test_a_timed_out_call_is_charged_its_own_estimate_not_the_guards_usage(
    how: str, with_handler: bool
) -> None:
    ledger = ledger_()
    agent = create_agent(Guarded(fail="timeout"), middleware=[BudgetMiddleware(ledger)])
    run(agent, how, handler_for(ledger, how) if with_handler else None, expect=TimeoutError)
    got = rows(ledger)
    requests, input_tokens, output_tokens, estimated = got["gpt-4o"]
    assert (requests, output_tokens, estimated) == (1, 0, 1)
    assert 0 < input_tokens < 100  # the question, counted: not the guard's 50,000
    if with_handler:
        assert got["claude-haiku-4-5"] == (1, 50_000, 10, 0)  # the guard, on its own model, once
    else:
        assert set(got) == {"gpt-4o"}  # (no handler: nobody charges the guard, as before)


@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
@pytest.mark.parametrize("with_handler", [False, True])
def test_a_refused_connection_is_released_whatever_the_guard_reported(how: str, with_handler: bool) -> None:
    ledger = ledger_()
    agent = create_agent(Guarded(fail="refused"), middleware=[BudgetMiddleware(ledger)])
    run(agent, how, handler_for(ledger, how) if with_handler else None, expect=ConnectionRefusedError)
    got = rows(ledger)
    assert "gpt-4o" not in got  # never sent: the hold released
    assert got.get("claude-haiku-4-5") == ((1, 50_000, 10, 0) if with_handler else None)
    used, charged = held_and_charged(ledger)
    assert used == charged  # nothing left held


@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream", "astream"])
def test_a_successful_call_is_charged_its_own_usage_however_the_agent_is_consumed(how: str) -> None:
    """``stream_mode="messages"`` streams every nested chat model: the guard's Claude running total
    does not stand in for the call's own reported usage."""
    ledger = ledger_()
    agent = create_agent(Guarded(), middleware=[BudgetMiddleware(ledger)])
    run(agent, how, handler_for(ledger, how))
    assert rows(ledger) == {"gpt-4o": (1, 120, 3, 0), "claude-haiku-4-5": (1, 50_000, 10, 0)}


# -- finding 3: a model a middleware further in swapped in -----------------------------------------


@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream", "astream"])
@pytest.mark.parametrize("with_handler", [False, True])
@pytest.mark.parametrize("order", ["fallback-outside", "budget-outside"])
def test_the_fallback_model_is_charged_once_on_its_own_model(
    how: str, with_handler: bool, order: str
) -> None:
    ledger = ledger_()
    fallback = ModelFallbackMiddleware(Echo(model_name="gpt-4.1", i=300_000, o=30_000))
    budget = BudgetMiddleware(ledger, max_run_usd=Decimal(5))
    middleware = [fallback, budget] if order == "fallback-outside" else [budget, fallback]
    agent = create_agent(Refused(model_name="gpt-4o-mini"), middleware=middleware)
    state = run(agent, how, handler_for(ledger, how) if with_handler else None)
    assert rows(ledger) == {"gpt-4.1": (1, 300_000, 30_000, 0)}
    assert build_report(ledger).totals.cost_usd == Decimal("0.84")  # 300k x $2/M + 30k x $8/M
    if how in ("stream", "astream"):  # (the final state: the run's caps count it)
        assert state["tokenbudget_run_tokens"] == 330_000


@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
def test_a_fallback_swapped_in_under_model_option_is_charged_on_the_model_that_answered(how: str) -> None:
    """The primary names no model the registry knows (``model=`` prices it): the fallback that
    answered names its own, and is charged on it."""
    ledger = ledger_()
    budget = BudgetMiddleware(ledger, model="gpt-4o-mini")
    fallback = ModelFallbackMiddleware(Echo(model_name="gpt-4.1", i=1_000, o=100))
    agent = create_agent(Refused(model_name="my-deployment"), middleware=[budget, fallback])
    run(agent, how)
    assert rows(ledger) == {"gpt-4.1": (1, 1_000, 100, 0)}


@pytest.mark.parametrize("with_handler", [False, True])
def test_a_billed_primary_attempt_before_the_fallback_is_charged_too(with_handler: bool) -> None:
    ledger = ledger_()
    budget = BudgetMiddleware(ledger)
    fallback = ModelFallbackMiddleware(Echo(model_name="gpt-4.1", i=1_000, o=100))
    agent = create_agent(TimesOut(model_name="gpt-4o-mini"), middleware=[budget, fallback])
    state = run(agent, "stream", handler_for(ledger, "stream") if with_handler else None)
    got = rows(ledger)
    assert got["gpt-4.1"] == (1, 1_000, 100, 0)
    requests, input_tokens, output_tokens, estimated = got["gpt-4o-mini"]
    assert (requests, output_tokens, estimated) == (1, 0, 1)
    assert input_tokens > 0
    assert state["tokenbudget_run_tokens"] == 1_100 + input_tokens


# -- finding 1: a routed tier attempt billed before its fallback answered ----------------------------


def tiers() -> tuple[dict[str, Any], dict[str, Any]]:
    return (
        {"small": TimesOut(model_name="gpt-4o-mini"), "large": Echo(model_name="gpt-4o")},
        {"small": [Echo(model_name="gpt-4.1-mini", i=100, o=10)]},
    )


@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream", "astream"])
@pytest.mark.parametrize("with_handler", [False, True])
@pytest.mark.parametrize("setup", ["router-model", "routing-middleware-inside"])
def test_a_billed_tier_attempt_that_fell_back_is_charged_its_estimate(
    how: str, with_handler: bool, setup: str
) -> None:
    ledger = ledger_()
    models, fallbacks = tiers()
    budget = BudgetMiddleware(ledger)
    if setup == "router-model":
        agent = create_agent(RouterChatModel(models, fallbacks=fallbacks), middleware=[budget])
    else:
        agent = create_agent(
            Echo(model_name="gpt-4o"), middleware=[budget, RoutingMiddleware(models, fallbacks=fallbacks)]
        )
    out = run(agent, how, handler_for(ledger, how) if with_handler else None)
    got = rows(ledger)
    assert got["gpt-4.1-mini"] == (1, 100, 10, 0)
    requests, input_tokens, output_tokens, estimated = got["gpt-4o-mini"]
    assert (requests, output_tokens, estimated) == (1, 0, 1)
    assert input_tokens > 0
    assert set(got) == {"gpt-4.1-mini", "gpt-4o-mini"}
    report = build_report(ledger).totals
    assert report.routed_requests == 2  # both attempts were routed calls
    if how in ("stream", "astream"):  # (the final state: counted in the run's caps)
        assert out["tokenbudget_run_tokens"] == 110 + input_tokens


@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
def test_every_billed_attempt_of_a_call_that_failed_is_charged(how: str) -> None:
    """Every tier attempt timed out: each is charged its own estimate (not one for all)."""
    ledger = ledger_()
    models = {"small": TimesOut(model_name="gpt-4o-mini"), "large": Echo(model_name="gpt-4o")}
    fallbacks = {"small": [TimesOut(model_name="gpt-4.1-mini")]}
    agent = create_agent(RouterChatModel(models, fallbacks=fallbacks), middleware=[BudgetMiddleware(ledger)])
    run(agent, how, expect=TimeoutError)
    got = rows(ledger)
    assert {m: (v[0], v[2], v[3]) for m, v in got.items()} == {
        "gpt-4o-mini": (1, 0, 1),
        "gpt-4.1-mini": (1, 0, 1),
    }
    used, charged = held_and_charged(ledger)
    assert used == charged  # nothing left held
