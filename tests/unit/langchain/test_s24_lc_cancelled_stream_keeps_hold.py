"""A streaming ``ainvoke`` cancelled after output keeps its hold until it is charged.

The provider produced (and bills) what the call streamed, so its worst case stays held until
the flagged estimate is committed (after the grace, or as the loop ends): other calls cannot
spend that room in the meantime and leave the payer over a hard limit. A call cancelled before
any output is released at once. Real LangChain runs (the ``generate()`` path of a
``streaming=True`` model), our handlers, a real ledger; the cancel comes once the model has
streamed, signalled by an event, not by a timer.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk

from langchain_tokenbudget import AsyncBudgetCallbackHandler, BudgetCallbackHandler
from tokenbudget_core.budgets import BudgetPolicy, Ladder
from tokenbudget_core.counting import TokenCounter
from tokenbudget_core.errors import BudgetExceededError
from tokenbudget_core.ledger import Ledger

HANDLERS = [BudgetCallbackHandler, AsyncBudgetCallbackHandler]
MAX_OUT = 1_000
WORDS = 600
COUNTER = TokenCounter.for_model("gpt-4o-mini")


class Streams(GenericFakeChatModel):
    """Streams ``words`` words, sets ``streamed``, then stalls (a provider gone quiet)."""

    words: int = WORDS
    streaming: bool = False
    """Set to ``True`` (LangChain streams only a ``streaming`` set explicitly)."""
    streamed: Any = None

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for _ in range(self.words):
            chunk = ChatGenerationChunk(message=AIMessageChunk("word "))
            if run_manager is not None:
                await run_manager.on_llm_new_token("word ", chunk=chunk)
            yield chunk
        self.streamed.set()
        await asyncio.Event().wait()  # never answers: only a cancel ends it


def tokens(led: Ledger) -> tuple[int, int]:
    """(spent, reserved) tokens of user ``u`` today."""
    ((spent, reserved),) = led.store.totals(led.day(), [("U/u", "tokens")], 0).values()
    return int(spent), int(reserved)


def input_tokens() -> int:
    from tokenbudget_core.messages import Message

    return int(COUNTER.count_messages([Message(role="user", content="hi")]))


@pytest.mark.parametrize("handler_class", HANDLERS)
def test_a_cancelled_stream_that_produced_output_keeps_its_hold_until_charged(handler_class: Any) -> None:
    worst = input_tokens() + MAX_OUT
    limit = worst + 100  # one call's worst case fits, not two
    # (no cache-only step: the first call, at 91% of the budget, must go out)
    led = Ledger("memory://", policy=BudgetPolicy(user_daily_tokens=limit, ladder=Ladder(cache_only=None)))
    handler = handler_class(led, model="gpt-4o-mini", user="u", max_output_tokens=MAX_OUT)
    big = AIMessage("done", usage_metadata={"input_tokens": 9, "output_tokens": 990, "total_tokens": 999})
    other = GenericFakeChatModel(messages=itertools.repeat(big), callbacks=[handler])
    seen: list[tuple[int, int]] = []

    async def main() -> None:
        model = Streams(messages=iter([]), streamed=asyncio.Event(), streaming=True, callbacks=[handler])
        call = asyncio.ensure_future(model.ainvoke("hi"))
        await model.streamed.wait()  # 600 words streamed: billed by the provider
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        for _ in range(3):
            await asyncio.sleep(0)  # the task's done-callbacks have run
        seen.append(tokens(led))
        with pytest.raises(BudgetExceededError):  # its room is still held: no second worst case fits
            await other.ainvoke("hi")
        seen.append(tokens(led))

    asyncio.run(main())  # the loop ends: the cancelled call's estimate is committed
    assert seen[0] == (0, worst)  # held, not released, after the cancel
    assert seen[1] == (0, worst)
    spent, reserved = tokens(led)
    assert reserved == 0  # nothing held once the estimate is committed
    assert spent == input_tokens() + COUNTER.count("word " * WORDS)
    assert spent <= limit
    (row,) = led.store.rollup([led.day()])
    assert (row.values["requests"], row.values["estimated"]) == (1, 1)


@pytest.mark.parametrize("handler_class", HANDLERS)
def test_a_stream_cancelled_before_any_output_is_released_at_once(handler_class: Any) -> None:
    led = Ledger("memory://", policy=BudgetPolicy(user_daily_tokens=10**6))
    handler = handler_class(led, model="gpt-4o-mini", user="u", max_output_tokens=MAX_OUT)
    seen: list[tuple[int, int]] = []

    async def main() -> None:
        model = Streams(
            messages=iter([]), words=0, streamed=asyncio.Event(), streaming=True, callbacks=[handler]
        )
        call = asyncio.ensure_future(model.ainvoke("hi"))
        await model.streamed.wait()  # sent, nothing streamed yet
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        for _ in range(3):
            await asyncio.sleep(0)
        seen.append(tokens(led))

    asyncio.run(main())
    assert seen == [(0, 0)]  # released at once
    assert tokens(led) == (0, 0)
