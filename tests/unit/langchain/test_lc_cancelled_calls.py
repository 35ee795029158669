"""Async calls cancelled mid-flight (a timeout) hold nothing once their task ends.

LangChain calls no ``on_llm_error`` when the task of an ``ainvoke`` / ``abatch`` is cancelled,
nor when a call is cancelled while its rate limiter makes it wait (the start event, where the
handler reserves, comes first). The handlers end such a run when its task ends: released when
nothing came back, else charged the flagged estimate of what was streamed. Real LangChain runs,
our handlers, a real ledger; the model is a LangChain fake that takes its time.
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
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.rate_limiters import InMemoryRateLimiter

from langchain_tokenbudget import AsyncBudgetCallbackHandler, BudgetCallbackHandler
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.counting import TokenCounter
from tokenbudget_core.ledger import Ledger

HANDLERS = [BudgetCallbackHandler, AsyncBudgetCallbackHandler]
MAX_OUT = 1_000
REPLY = AIMessage("fine", usage_metadata={"input_tokens": 9, "output_tokens": 1, "total_tokens": 10})


class Slow(GenericFakeChatModel):
    """Answers after ``delay`` seconds; streams three words, then stalls for as long."""

    delay: float = 30.0
    streaming: bool = False
    """``ainvoke`` streams (LangChain's generate path), as providers' ``streaming=True``."""

    async def _agenerate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        await asyncio.sleep(self.delay)
        return await super()._agenerate(messages, *args, **kwargs)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for word in ("one ", "two ", "three "):
            chunk = ChatGenerationChunk(message=AIMessageChunk(word))
            if run_manager is not None:
                await run_manager.on_llm_new_token(word, chunk=chunk)
            yield chunk
        await asyncio.sleep(self.delay)


def ledger() -> Ledger:
    """Room for two calls' worst case, not three: calls held after a timeout soon refuse the next."""
    return Ledger("memory://", policy=BudgetPolicy(user_daily_tokens=2 * (MAX_OUT + 20)))


def held(led: Ledger) -> tuple[int, int]:
    """(spent, reserved) tokens of user ``u`` today."""
    ((spent, reserved),) = led.store.totals(led.day(), [("U/u", "tokens")], 0).values()
    return int(spent), int(reserved)


def handler_for(handler_class: Any, led: Ledger) -> Any:
    return handler_class(led, model="gpt-4o-mini", user="u", max_output_tokens=MAX_OUT)


async def settled() -> None:
    """Let the event loop run the done-callbacks of the tasks that just ended."""
    for _ in range(3):
        await asyncio.sleep(0)


@pytest.mark.parametrize("handler_class", HANDLERS)
async def test_ainvoke_cancelled_by_a_timeout_holds_nothing(handler_class: Any) -> None:
    led = ledger()
    model = Slow(messages=itertools.repeat(REPLY), callbacks=[handler_for(handler_class, led)])
    for _ in range(3):  # three timeouts in a row: each would hold a worst case until its lease ended
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(model.ainvoke("hi"), 0.05)
        await settled()
        assert held(led) == (0, 0)
    model.delay = 0
    assert (await model.ainvoke("hi")).content == "fine"  # the budget is whole: the call goes out
    assert held(led) == (10, 0)


@pytest.mark.parametrize("handler_class", HANDLERS)
async def test_abatch_cancelled_by_a_timeout_holds_nothing(handler_class: Any) -> None:
    led = Ledger("memory://", policy=BudgetPolicy(user_daily_tokens=10**6))
    model = Slow(messages=itertools.repeat(REPLY), callbacks=[handler_for(handler_class, led)])
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(model.abatch(["a", "b", "c"]), 0.05)
    await settled()
    assert held(led) == (0, 0)


@pytest.mark.parametrize("handler_class", HANDLERS)
async def test_a_call_cancelled_while_its_rate_limiter_waits_holds_nothing(handler_class: Any) -> None:
    led = ledger()
    limiter = InMemoryRateLimiter(requests_per_second=0.1, check_every_n_seconds=0.01, max_bucket_size=1)
    model = Slow(
        messages=itertools.repeat(REPLY),
        delay=0,
        rate_limiter=limiter,
        callbacks=[handler_for(handler_class, led)],
    )
    with pytest.raises(TimeoutError):  # its bucket starts empty: the call waits, and is never sent
        await asyncio.wait_for(model.ainvoke("hi"), 0.1)
    await settled()
    assert held(led) == (0, 0)


@pytest.mark.parametrize("handler_class", HANDLERS)
async def test_a_streaming_ainvoke_cancelled_after_output_is_charged_the_estimate(
    handler_class: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from langchain_tokenbudget import budget_callback

    monkeypatch.setattr(budget_callback, "_ORPHAN_GRACE_S", 0.05)  # (30 s in use) no chunk since: gone
    led = ledger()
    model = Slow(
        messages=itertools.repeat(REPLY), streaming=True, callbacks=[handler_for(handler_class, led)]
    )
    with pytest.raises(TimeoutError):  # three words streamed (the generate path), then it stalls
        await asyncio.wait_for(model.ainvoke("hi"), 0.1)
    await settled()
    assert (held(led)[0], held(led)[1] > 0) == (0, True)  # held (it produced output) until charged
    await asyncio.sleep(0.2)
    spent, reserved = held(led)
    assert reserved == 0
    assert spent > 0  # the provider produced output: it was billed
    (row,) = led.store.rollup([led.day()])
    assert (row.values["requests"], row.values["estimated"]) == (1, 1)
    assert row.values["output_tokens"] == TokenCounter.for_model("gpt-4o-mini").count("one two three ")


@pytest.mark.parametrize("handler_class", HANDLERS)
async def test_a_long_lived_task_keeps_no_callback_per_finished_call(handler_class: Any) -> None:
    led = Ledger("memory://", policy=BudgetPolicy(user_daily_tokens=10**6))
    model = Slow(messages=itertools.repeat(REPLY), delay=0, callbacks=[handler_for(handler_class, led)])
    task = asyncio.current_task()
    assert task is not None
    before = len(getattr(task, "_callbacks", []))
    for _ in range(20):
        await model.ainvoke("hi")
    assert len(getattr(task, "_callbacks", [])) == before  # each call's watch is gone with it
    assert held(led) == (200, 0)


class SlowStart(GenericFakeChatModel):
    """Takes 0.2 s before its first word (a provider's time to first token)."""

    async def _astream(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        await asyncio.sleep(0.2)
        for word in ("one ", "two ", "three "):
            yield ChatGenerationChunk(message=AIMessageChunk(word))


@pytest.mark.filterwarnings("ignore::langchain_core._api.beta_decorator.LangChainBetaWarning")
@pytest.mark.parametrize("handler_class", HANDLERS)
async def test_a_v3_stream_whose_first_token_timed_out_is_charged_when_read_on(handler_class: Any) -> None:
    """``astream_events(version="v3")`` starts the call in the task awaiting the first event
    (``asyncio.wait_for`` makes one) and drives it in a producer task of its own: the timeout
    ends the first task, not the call, which the reader goes on reading and which is charged."""
    led = ledger()
    model = SlowStart(messages=itertools.repeat(REPLY), callbacks=[handler_for(handler_class, led)])
    stream = await model.astream_events("hi", config={"callbacks": []}, version="v3")
    words = stream.text.__aiter__()
    with pytest.raises(TimeoutError):  # no first token yet: the app shows a spinner and reads on
        await asyncio.wait_for(words.__anext__(), 0.05)
    text = "".join([word async for word in words])
    await settled()
    assert text == "one two three "
    spent, reserved = held(led)
    assert (spent > 0, reserved) == (True, 0)
    (row,) = led.store.rollup([led.day()])
    assert row.values["requests"] == 1


async def test_runs_the_handler_forgets_leave_no_callback_on_their_task() -> None:
    """Streams left open for more than ten leases are forgotten (swept): a long-lived task keeps
    no done-callback for them (each would hold its run)."""
    led = Ledger("memory://", policy=BudgetPolicy(user_daily_tokens=10**7), lease_seconds=0.01)
    handler = AsyncBudgetCallbackHandler(led, model="gpt-4o-mini", user="u", max_output_tokens=10)
    model = GenericFakeChatModel(messages=iter(["a b c"] * 100), callbacks=[handler])
    task = asyncio.current_task()
    assert task is not None
    before = len(getattr(task, "_callbacks", []))
    kept = []
    for _ in range(30):
        stream = model.astream("hi")
        await anext(stream)  # left open: the consumer keeps it and never reads on
        kept.append(stream)
        await asyncio.sleep(0.011)  # more than a lease: older runs are swept as the next starts
    await settled()
    assert len(handler._runs) < 30
    assert len(getattr(task, "_callbacks", [])) - before <= len(handler._runs)
    for stream in kept:
        await stream.aclose()


class Reporting(GenericFakeChatModel):
    """Streams three words, the first one empty (as OpenAI's first chunk); the last reports usage."""

    async def _astream(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        words = ["", "one ", "two ", "three "]
        for i, word in enumerate(words):
            await asyncio.sleep(0.01)
            last = i == len(words) - 1
            usage = {"input_tokens": 1000, "output_tokens": 500, "total_tokens": 1500} if last else None
            yield ChatGenerationChunk(message=AIMessageChunk(word, usage_metadata=usage))  # type: ignore[arg-type]


@pytest.mark.parametrize("handler_class", HANDLERS)
async def test_a_first_chunk_read_in_a_task_of_its_own_leaves_the_call_to_its_end(handler_class: Any) -> None:
    """A time-to-first-token limit (``asyncio.wait_for(anext(stream), t)`` runs in a task of its
    own on Python 3.11) that is met ends that task normally: the call goes on, held, and its
    end charges the usage the provider reported."""
    led = Ledger("memory://", policy=BudgetPolicy(user_daily_tokens=1_500))
    model = Reporting(messages=iter([]), callbacks=[handler_for(handler_class, led)])
    stream = model.astream("hi")
    await asyncio.wait_for(anext(stream), 5)
    await settled()
    assert held(led)[1] > 0  # still held mid-stream: a second call cannot take its room
    rest = "".join([str(chunk.content) async for chunk in stream])
    assert rest.startswith("one two three")
    assert held(led) == (1_500, 0)  # the reported usage, once


@pytest.mark.parametrize("handler_class", HANDLERS)
def test_a_call_cancelled_after_output_in_a_loop_that_ends_soon_is_charged(handler_class: Any) -> None:
    """A CLI or batch job: the streaming call times out after three words and ``asyncio.run``
    returns well before the 30 s grace: the estimate is charged as the loop shuts down."""
    led = ledger()
    model = Slow(
        messages=itertools.repeat(REPLY), streaming=True, callbacks=[handler_for(handler_class, led)]
    )

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(model.ainvoke("hi"), 0.1)

    asyncio.run(main())
    (row,) = led.store.rollup([led.day()])
    assert (row.values["requests"], row.values["estimated"]) == (1, 1)
    assert row.values["output_tokens"] == TokenCounter.for_model("gpt-4o-mini").count("one two three ")
    assert held(led)[1] == 0


@pytest.mark.parametrize("handler_class", HANDLERS)
async def test_a_task_that_timed_out_and_ended_releases_its_call_after_the_grace(
    handler_class: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``asyncio.timeout()`` around the call (``wait_for`` on Python 3.12+ works this way) in a
    task of its own: the task ends (returning or raising), not cancelled; with no chunk for the
    grace the call is taken for gone and released, well before its lease."""
    from langchain_tokenbudget import budget_callback

    monkeypatch.setattr(budget_callback, "_ORPHAN_GRACE_S", 0.05)
    led = ledger()
    model = Slow(messages=itertools.repeat(REPLY), callbacks=[handler_for(handler_class, led)])

    async def request() -> str:
        try:
            async with asyncio.timeout(0.05):
                await model.ainvoke("hi")
        except TimeoutError:
            return "timed out"
        return "answered"

    assert await asyncio.create_task(request()) == "timed out"
    assert held(led)[1] > 0  # held while it might still be streaming elsewhere
    await asyncio.sleep(0.3)
    assert held(led) == (0, 0)
