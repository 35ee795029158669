"""A call cancelled while the async handler reserves it holds nothing afterwards.

When an outer chain names the payer and an ``attribute()`` block opened inside the run names
another, ``AsyncBudgetCallbackHandler`` reserves in a task of its own (so the outer payer wins).
A cancel that reaches the caller after that task reserved, before the caller resumed (a
``wait_for`` whose timer fires in that loop iteration), used to drop the reservation: the call
was never sent and its worst case stayed held until the lease. Real LangChain runs, a real
ledger; the cancel is delivered in that window by a task polling the ledger, no timing.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda

from langchain_tokenbudget import AsyncBudgetCallbackHandler
from tokenbudget_core.attribution import attribute
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.ledger import Ledger

REPLY = AIMessage("fine", usage_metadata={"input_tokens": 9, "output_tokens": 1, "total_tokens": 10})


def held(led: Ledger, user: str) -> tuple[int, int]:
    """(spent, reserved) tokens of ``user`` today."""
    ((spent, reserved),) = led.store.totals(led.day(), [(f"U/{user}", "tokens")], 0).values()
    return int(spent), int(reserved)


def cancelled_while_reserving(inner_block: bool) -> tuple[Ledger, bool]:
    """Run one call whose task is cancelled right after its reservation is made, before the
    handler's code resumes; ``(ledger, whether the call was cancelled)`` once the loop is done."""
    led = Ledger("memory://", policy=BudgetPolicy(user_daily_tokens=10**6))
    handler = AsyncBudgetCallbackHandler(led, model="gpt-4o-mini", max_output_tokens=100)
    model = GenericFakeChatModel(messages=itertools.repeat(REPLY))

    async def inner(text: str, config: RunnableConfig) -> Any:
        if not inner_block:
            return await model.ainvoke(text, config=config)
        with attribute(user="inner-block"):  # another payer, opened inside the run
            return await model.ainvoke(text, config=config)

    chain = RunnableLambda(inner)

    async def main() -> bool:
        call = asyncio.ensure_future(
            chain.ainvoke("hello", config={"callbacks": [handler], "metadata": {"user": "outer"}})
        )

        async def cancel_once_reserved() -> None:
            # One step behind everything else each loop iteration: it sees the reservation as
            # soon as it is made, before the caller's wake-up (queued after it) runs.
            while held(led, "outer")[1] == 0 and not call.done():
                await asyncio.sleep(0)
            call.cancel()

        await asyncio.gather(cancel_once_reserved(), return_exceptions=True)
        try:
            await call
        except asyncio.CancelledError:
            return True
        return False

    was_cancelled = asyncio.run(main())  # returns once the loop's executor jobs have run
    return led, was_cancelled


def test_a_call_cancelled_as_its_outer_payer_is_reserved_holds_nothing() -> None:
    led, was_cancelled = cancelled_while_reserving(inner_block=True)
    assert was_cancelled  # the call was never sent
    assert held(led, "outer") == (0, 0)  # its worst case is not left held until the lease
    assert held(led, "inner-block") == (0, 0)


def test_the_same_cancel_on_the_plain_path_holds_nothing() -> None:
    led, was_cancelled = cancelled_while_reserving(inner_block=False)
    assert was_cancelled
    assert held(led, "outer") == (0, 0)
