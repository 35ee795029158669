"""A cancelled streaming call's kept hold does not lapse before its estimate is charged when the
ledger's lease is shorter than the orphan grace (30 s): the wait is at most half the lease
(re-review s24 F2). Before, with ``lease_seconds`` under 30 the hold expired first, another call
spent the room, and the payer ended at 1,607 tokens of a 1,100-token hard limit."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk

from langchain_tokenbudget import AsyncBudgetCallbackHandler
from tokenbudget_core.budgets import BudgetPolicy, Ladder
from tokenbudget_core.ledger import Ledger


class Streams(GenericFakeChatModel):
    streaming: bool = False
    streamed: Any = None

    async def _astream(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        for _ in range(600):
            chunk = ChatGenerationChunk(message=AIMessageChunk("word "))
            if run_manager is not None:
                await run_manager.on_llm_new_token("word ", chunk=chunk)
            yield chunk
        self.streamed.set()
        await asyncio.Event().wait()  # the provider never finishes: the caller gives up


def test_a_cancelled_streams_hold_lasts_until_its_estimate_even_with_a_short_lease() -> None:
    # (no cache-only step: the first call, at 91% of the budget, must go out)
    policy = BudgetPolicy(user_daily_tokens=1_100, ladder=Ladder(cache_only=None))
    ledger = Ledger("memory://", lease_seconds=4, policy=policy)
    handler = AsyncBudgetCallbackHandler(ledger, model="gpt-4o-mini", user="u", max_output_tokens=1_000)

    def tokens() -> tuple[int, int]:
        ((spent, held),) = ledger.store.totals(ledger.day(), [("U/u", "tokens")], 0).values()
        return int(spent), int(held)

    async def run() -> list[tuple[int, int]]:
        model = Streams(messages=iter([]), streamed=asyncio.Event(), streaming=True, callbacks=[handler])
        task = asyncio.ensure_future(model.ainvoke("hi"))
        await asyncio.wait_for(model.streamed.wait(), 20)  # (a hang guard)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        seen = [tokens()]
        deadline = time.monotonic() + 20  # a hang guard: the estimate comes after half the lease
        while seen[-1][0] == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            seen.append(tokens())
        return seen

    seen = asyncio.run(run())
    assert all(spent + held > 0 for spent, held in seen)  # held, then charged: never neither
    spent, held = seen[-1]
    assert spent > 0
    assert held == 0
