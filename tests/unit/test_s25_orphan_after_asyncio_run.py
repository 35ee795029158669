"""A streaming call cancelled by ``asyncio.run`` shutting down is charged within the orphan
grace, not when the process exits.

``asyncio.run`` returning cancels the tasks still running (a background task mid-stream): the
handler sees the call's task end with the call open (LangChain calls no ``on_llm_error`` for a
cancelled ``ainvoke``), and keeps the hold of a call that streamed output until the flagged
estimate of it is charged. The watch that waited for the grace was a task of that loop, made
after ``asyncio.run`` had picked the tasks to cancel: the loop closed with it pending, and the
worst case stayed held until the process exited. Real LangChain runs, our handlers, a real ledger.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk

from langchain_tokenbudget import AsyncBudgetCallbackHandler, BudgetCallbackHandler, budget_callback
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.counting import TokenCounter
from tokenbudget_core.ledger import Ledger

HANDLERS = [BudgetCallbackHandler, AsyncBudgetCallbackHandler]
HANG_GUARD_S = 20.0


class Streams(GenericFakeChatModel):
    """Streams two words, then the provider stalls (never finishes)."""

    streaming: bool = False
    streamed: Any = None

    async def _astream(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        for word in ("one ", "two "):
            chunk = ChatGenerationChunk(message=AIMessageChunk(word))
            if run_manager is not None:
                await run_manager.on_llm_new_token(word, chunk=chunk)
            yield chunk
        self.streamed.set()
        await asyncio.Event().wait()


def tokens(led: Ledger) -> tuple[int, int]:
    """(spent, reserved) tokens of user ``u`` today."""
    ((spent, reserved),) = led.store.totals(led.day(), [("U/u", "tokens")], 0).values()
    return int(spent), int(reserved)


def until_spent(led: Ledger) -> list[tuple[int, int]]:
    """The ledger's figures, read until something is spent (or the hang guard runs out)."""
    seen = [tokens(led)]
    deadline = time.monotonic() + HANG_GUARD_S
    while seen[-1][0] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
        seen.append(tokens(led))
    return seen


async def read(model: Streams, how: str) -> None:
    if how == "ainvoke":  # LangChain's generate path streams (streaming=True)
        await model.ainvoke("hi")
    else:
        async for _ in model.astream("hi"):
            pass


@pytest.mark.parametrize("how", ["ainvoke", "astream"])
@pytest.mark.parametrize("handler_class", HANDLERS)
def test_a_stream_cancelled_by_asyncio_run_returning_is_charged_within_the_grace(
    handler_class: Any, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(budget_callback, "_ORPHAN_GRACE_S", 0.05)  # (30 s in use)
    led = Ledger("memory://", policy=BudgetPolicy(user_daily_tokens=10**6))
    handler = handler_class(led, model="gpt-4o-mini", user="u", max_output_tokens=1_000)

    async def main() -> None:
        model = Streams(messages=iter([]), streaming=True, streamed=asyncio.Event(), callbacks=[handler])
        asyncio.get_running_loop().create_task(read(model, how))  # a background task
        await asyncio.wait_for(model.streamed.wait(), HANG_GUARD_S)  # two words streamed

    asyncio.run(main())  # returns: its shutdown cancels the background task mid-stream
    seen = until_spent(led)
    assert all(spent + held > 0 for spent, held in seen)  # held, then charged: never neither
    spent, held = seen[-1]
    assert held == 0  # the worst case is no longer held, in this process, long before it exits
    (row,) = led.store.rollup([led.day()])
    assert (row.values["requests"], row.values["estimated"]) == (1, 1)
    assert row.values["output_tokens"] == TokenCounter.for_model("gpt-4o-mini").count("one two ")
    assert spent == row.values["input_tokens"] + row.values["output_tokens"]
