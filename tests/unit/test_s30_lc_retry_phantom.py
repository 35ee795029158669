"""``BudgetMiddleware`` with an inner ``ModelRetryMiddleware`` whose attempts all fail (review s30,
regression finding 2).

``ModelRetryMiddleware``'s default ``on_failure="continue"`` does not raise once its retries are
spent: it returns an ``AIMessage`` carrying the error text. No model wrote that reply, so the
call is settled as one that failed: each billed attempt is charged once (its flagged estimate),
the last one settling the call's reservation, and nothing is charged for the error text (no
phantom fourth call, counted input plus the error text as output). Attempts that were never sent
(connection refused) charge nothing and leave nothing held. A retry that answers in the end is
charged its billed failed attempts plus the answer.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import ModelRetryMiddleware
from langchain_core.messages import AIMessage

from agent_call_support import ReplyingChatModel, held_and_charged, rows
from langchain_tokenbudget import AsyncBudgetCallbackHandler, BudgetCallbackHandler, BudgetMiddleware
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.ledger import Ledger

QUESTION = "What is the storage limit on the Team plan?"
CONFIG: dict[str, Any] = {"metadata": {"feature": "f", "user": "u"}}
MODES = ["messages", "values"]


class Flaky(ReplyingChatModel):
    """A chat model whose first attempts fail as ``failures`` says (``"timeout"``: a read timeout,
    its request went out, billed; ``"refused"``: the connection was refused, nothing sent), then
    answers "ok" with its usage reported. ``calls`` counts the provider calls made."""

    model_name: str = "gpt-4o-mini"
    failures: tuple[str, ...] = ()
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "flaky"

    def _reply(self) -> AIMessage:
        self.calls += 1
        if self.calls <= len(self.failures):
            if self.failures[self.calls - 1] == "timeout":
                raise TimeoutError("read timed out")
            raise ConnectionRefusedError("connection refused")
        usage = {"input_tokens": 100, "output_tokens": 10, "total_tokens": 110}
        return AIMessage("ok", usage_metadata=usage, response_metadata={"model_name": self.model_name})  # type: ignore[arg-type]


def ledger_() -> Ledger:
    return Ledger("memory://", policy=BudgetPolicy(user_daily_tokens=10**7))


def agent_of(ledger: Ledger, model: Flaky) -> Any:
    retry = ModelRetryMiddleware(
        max_retries=2, retry_on=(TimeoutError, ConnectionRefusedError), initial_delay=0.0, jitter=False
    )  # on_failure="continue", its default: the error comes back as an AIMessage
    return create_agent(model, middleware=[BudgetMiddleware(ledger), retry])


def run(agent: Any, how: str, ledger: Ledger, with_handler: bool) -> dict[str, Any]:
    """The run's final state (invoked, or streamed in ``messages`` mode as agent UIs stream)."""
    config = dict(CONFIG)
    if with_handler:  # a handler of the same ledger on the run: it leaves the call to the middleware
        handler = AsyncBudgetCallbackHandler if how.startswith("a") else BudgetCallbackHandler
        config["callbacks"] = [handler(ledger)]
    payload = {"messages": [("user", QUESTION)]}
    if how == "invoke":
        return agent.invoke(payload, config=config)  # type: ignore[no-any-return]
    if how == "ainvoke":
        return asyncio.run(agent.ainvoke(payload, config=config))  # type: ignore[no-any-return]
    if how == "stream":
        return [c for m, c in agent.stream(payload, config=config, stream_mode=MODES) if m == "values"][-1]  # type: ignore[no-any-return]

    async def astream() -> dict[str, Any]:
        states = [
            c async for m, c in agent.astream(payload, config=config, stream_mode=MODES) if m == "values"
        ]
        return states[-1]  # type: ignore[no-any-return]

    return asyncio.run(astream())


@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream", "astream"])
@pytest.mark.parametrize("with_handler", [False, True])
def test_an_exhausted_retry_that_continues_charges_each_billed_attempt_once(
    how: str, with_handler: bool
) -> None:
    ledger = ledger_()
    model = Flaky(failures=("timeout",) * 3)
    state = run(agent_of(ledger, model), how, ledger, with_handler)
    assert model.calls == 3
    reply = state["messages"][-1]
    assert isinstance(reply, AIMessage)
    assert "failed" in str(reply.content)  # the retry's own message, no model's
    got = rows(ledger)
    assert set(got) == {"gpt-4o-mini"}
    requests, input_tokens, output_tokens, estimated = got["gpt-4o-mini"]
    assert (requests, output_tokens, estimated) == (3, 0, 3)  # one per provider call, no error text
    assert input_tokens > 0
    assert input_tokens % 3 == 0  # each the same request, counted once
    used, charged = held_and_charged(ledger)
    assert used == charged  # nothing left held
    if how in ("stream", "astream"):  # (the final state: the run's caps count exactly these)
        assert state["tokenbudget_run_tokens"] == charged


@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
@pytest.mark.parametrize("with_handler", [False, True])
def test_an_exhausted_retry_of_refused_connections_charges_nothing(how: str, with_handler: bool) -> None:
    ledger = ledger_()
    model = Flaky(failures=("refused",) * 3)
    run(agent_of(ledger, model), how, ledger, with_handler)
    assert model.calls == 3
    assert rows(ledger) == {}  # never sent: nothing charged, not even the error text
    assert held_and_charged(ledger) == (0, 0)  # the hold released


@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
@pytest.mark.parametrize(
    ("failures", "billed"),
    [
        (("timeout", "refused", "refused"), 1),  # the billed one charged, the last releases the hold
        (("refused", "refused", "timeout"), 1),  # the last, billed, settles the reservation
        (("timeout", "timeout", "refused"), 2),
        (("refused", "timeout", "timeout"), 2),
    ],
)
def test_an_exhausted_retry_charges_its_billed_attempts_only(
    how: str, failures: tuple[str, ...], billed: int
) -> None:
    ledger = ledger_()
    model = Flaky(failures=failures)
    run(agent_of(ledger, model), how, ledger, False)
    got = rows(ledger)
    requests, input_tokens, output_tokens, estimated = got["gpt-4o-mini"]
    assert (requests, output_tokens, estimated) == (billed, 0, billed)
    assert input_tokens > 0
    used, charged = held_and_charged(ledger)
    assert used == charged


@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream", "astream"])
@pytest.mark.parametrize("with_handler", [False, True])
def test_a_retry_that_answers_is_charged_its_billed_attempts_and_the_answer(
    how: str, with_handler: bool
) -> None:
    ledger = ledger_()
    model = Flaky(failures=("timeout", "refused"))
    state = run(agent_of(ledger, model), how, ledger, with_handler)
    assert model.calls == 3
    assert state["messages"][-1].content == "ok"
    requests, input_tokens, output_tokens, estimated = rows(ledger)["gpt-4o-mini"]
    assert (requests, output_tokens, estimated) == (2, 10, 1)  # the timed-out attempt + the answer
    assert input_tokens > 100  # the answer's reported 100, plus the attempt's counted input
    used, charged = held_and_charged(ledger)
    assert used == charged
    if how in ("stream", "astream"):
        assert state["tokenbudget_run_tokens"] == charged
