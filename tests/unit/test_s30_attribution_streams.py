"""A stream read step by step in fresh copies of the request's context (Starlette's
``StreamingResponse`` over a sync generator, ``asyncio.wait_for`` per chunk): an ``attribute()``
block opened around ``yield`` no longer crashes with a bare ``ValueError`` when it ends in
another context, and ``attributed()`` / ``aattributed()`` charge every step's calls to the
payer (so the payer's budgets refuse the step that would go over)."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Iterator

import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient

from tokenbudget_core import BudgetPolicy, FeatureBudget, Ledger, Usage
from tokenbudget_core.attribution import aattributed, attribute, attributed, current_attribution, overhead
from tokenbudget_core.errors import BudgetExceededError, InvalidInputError

pytestmark = pytest.mark.usefixtures("isolated")

STEP_USAGE = Usage(input_tokens=5_000, output_tokens=500)  # $0.0175 on gpt-4o


def _ledger() -> Ledger:
    return Ledger("memory://", policy=BudgetPolicy(features={"chat": FeatureBudget(user_daily_usd="0.05")}))


def _step(ledger: Ledger) -> str:
    r = ledger.reserve(model="gpt-4o", input_tokens=5_000, max_output_tokens=500)
    ledger.commit(r, STEP_USAGE)
    a = current_attribution()
    return f"{a.feature}/{a.user}\n"


def test_a_block_left_in_another_context_restores_instead_of_raising() -> None:
    def gen() -> Iterator[str]:
        with attribute(feature="chat", user="alice"):
            yield current_attribution().user or "-"
            yield current_attribution().user or "-"

    g = gen()
    assert contextvars.copy_context().run(next, g) == "alice"
    assert contextvars.copy_context().run(next, g) == "-"  # a fresh copy: the block is not in force there
    contextvars.copy_context().run(lambda: list(g))  # the block ends in a third context: no ValueError
    assert current_attribution().user is None
    with attribute(feature="x"):  # and blocks still nest as before in one context
        with overhead("summary"):
            assert current_attribution().overhead == "summary"
        assert current_attribution().overhead is None


def test_attributed_stream_served_by_starlette_charges_and_refuses_every_step() -> None:
    ledger = _ledger()
    app = FastAPI()

    @app.get("/chat")
    def chat(user: str) -> StreamingResponse:
        def gen() -> Iterator[str]:
            for _ in range(2):
                yield _step(ledger)

        return StreamingResponse(attributed(gen(), feature="chat", user=user))

    with TestClient(app) as client:
        assert client.get("/chat", params={"user": "alice"}).text == "chat/alice\nchat/alice\n"
    state = ledger.state(feature="chat", user="alice")
    assert str(state.used["user_daily_usd"]) == "0.035"
    with attribute(feature="chat", user="alice"), pytest.raises(BudgetExceededError):
        _step(ledger)  # $0.035 + $0.0175 worst case > $0.05: her budget saw both streamed steps


def test_aattributed_keeps_the_payer_across_wait_for_steps() -> None:
    ledger = _ledger()

    async def agen() -> AsyncIterator[str]:
        for _ in range(2):
            yield _step(ledger)

    async def main() -> list[str]:
        stream = aattributed(agen(), feature="chat", user="bob")
        out = []
        while True:
            try:
                out.append(await asyncio.wait_for(anext(stream), timeout=30))  # a task per step
            except StopAsyncIteration:
                return out

    assert asyncio.run(main()) == ["chat/bob\n", "chat/bob\n"]
    assert str(ledger.state(feature="chat", user="bob").used["user_daily_usd"]) == "0.035"


def test_closing_the_wrapper_closes_the_stream() -> None:
    closed = []

    def gen() -> Iterator[int]:
        try:
            yield 1
            yield 2
        finally:
            closed.append(current_attribution().user)

    stream = attributed(gen(), user="carol")
    assert next(stream) == 1
    stream.close()  # type: ignore[attr-defined]
    assert closed == ["carol"]


def test_bad_arguments_are_named() -> None:
    with pytest.raises(InvalidInputError) as e:
        attributed(5, user="u")  # type: ignore[arg-type]
    assert e.value.field == "stream"
    with pytest.raises(InvalidInputError) as e:
        attributed([1], user="")
    assert e.value.field == "user"
    with pytest.raises(InvalidInputError) as e:
        aattributed([1], user="u")  # type: ignore[arg-type]
    assert e.value.field == "stream"


def test_a_block_ended_in_a_readers_context_leaves_the_readers_payer() -> None:
    def answer() -> Iterator[int]:
        with attribute(feature="chat", user="alice"):
            yield 1
            yield 2

    g = answer()
    contextvars.copy_context().run(next, g)  # the first step read in a fresh copy, as servers do
    with attribute(feature="billing", user="bob"):  # the reader's own block
        assert list(g) == [2]  # the generator's block ends here, in the reader's context
        a = current_attribution()
        assert (a.feature, a.user) == ("billing", "bob")
    assert current_attribution().user is None
