"""Two LlamaIndex ``BudgetCallbackHandler``s of two ledgers on one callback manager (a per-team
ledger and a global one): a call the second one stops in ``on_event_start`` is never sent and
LlamaIndex ends no event for it, so the reservation the first one made for it is released then,
not held until its lease ends (review s25_li, finding 6). Real LlamaIndex calls on a small
``CustomLLM`` reporting its usage, real memory ledgers."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms import ChatMessage, ChatResponse, CompletionResponse, CustomLLM, LLMMetadata
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback

from llamaindex_tokenbudget import BudgetCallbackHandler
from tokenbudget_core.budgets import BudgetPolicy
from tokenbudget_core.errors import BudgetExceededError, InvalidInputError
from tokenbudget_core.ledger import Ledger

_RAW = {
    "object": "chat.completion",
    "usage": {"prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107},
}


class _LLM(CustomLLM):
    """A gpt-4o-mini answering "hello world", reporting 100 input / 7 output tokens."""

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="gpt-4o-mini", is_chat_model=True)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text="hello world", raw=_RAW)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        yield CompletionResponse(text="hello world", delta="hello world", raw=_RAW)

    @llm_chat_callback()
    def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        return ChatResponse(message=ChatMessage(role="assistant", content="hello world"), raw=_RAW)

    @llm_chat_callback()
    async def achat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        return ChatResponse(message=ChatMessage(role="assistant", content="hello world"), raw=_RAW)


HI = [ChatMessage(role="user", content="hi")]


def _team() -> Ledger:
    return Ledger("memory://", policy=BudgetPolicy(daily_usd="1"))


def _held(ledger: Ledger) -> Decimal:
    return sum(ledger.state().used.values(), Decimal(0))


def test_calls_the_global_ledger_refuses_leave_nothing_held_on_the_team_ledger() -> None:
    team = _team()
    exhausted = Ledger("memory://", policy=BudgetPolicy(daily_usd="0.0000001"))
    team_handler = BudgetCallbackHandler(team)
    llm = _LLM(callback_manager=CallbackManager([team_handler, BudgetCallbackHandler(exhausted)]))
    for _ in range(60):  # each held ~$0.0048 of the team's $1 before: 60 held ~29%
        with pytest.raises(BudgetExceededError):
            llm.chat(HI)
    assert _held(team) == 0
    assert team.state().step == "normal"
    assert team_handler._calls == {}  # forgotten, not only released
    assert team.store.rollup([team.day()]) == [] or all(
        not r.values.get("requests") for r in team.store.rollup([team.day()])
    )
    # the team's own calls (its handler alone) are allowed and charged what they used
    alone = _LLM(callback_manager=CallbackManager([BudgetCallbackHandler(team)]))
    assert alone.chat(HI).message.content == "hello world"
    [row] = [r for r in team.store.rollup([team.day()]) if r.values.get("requests")]
    assert (row.values["input_tokens"], row.values["output_tokens"]) == (100, 7)


def test_enough_refusals_no_longer_block_the_team_ledger() -> None:
    """Before: 200 refusals held $0.96 of the team's $1 and the team ledger refused its own call."""
    team = _team()
    exhausted = Ledger("memory://", policy=BudgetPolicy(daily_usd="0.0000001"))
    llm = _LLM(
        callback_manager=CallbackManager([BudgetCallbackHandler(team), BudgetCallbackHandler(exhausted)])
    )
    for _ in range(210):
        with pytest.raises(BudgetExceededError):
            llm.complete("hi")
    alone = _LLM(callback_manager=CallbackManager([BudgetCallbackHandler(team)]))
    assert alone.complete("hi").text == "hello world"
    assert _held(team) > 0  # the one call charged


def test_async_and_stream_refusals_release_the_first_ledger() -> None:
    team = _team()
    exhausted = Ledger("memory://", policy=BudgetPolicy(daily_usd="0.0000001"))
    llm = _LLM(
        callback_manager=CallbackManager([BudgetCallbackHandler(team), BudgetCallbackHandler(exhausted)])
    )

    async def refused() -> None:
        for _ in range(5):
            with pytest.raises(BudgetExceededError):
                await llm.achat(HI)

    asyncio.run(refused())
    for _ in range(5):
        with pytest.raises(BudgetExceededError):
            llm.stream_complete("hi")
    assert _held(team) == 0


class _Unnamed(_LLM):
    """The same LLM, naming no model (a handler without ``model=`` cannot price it)."""

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="unknown", is_chat_model=True)


def test_a_second_handler_failing_on_the_call_releases_the_first_one() -> None:
    """Not only a refusal: an error that stops the call in the second handler's start."""
    team = _team()
    llm = _Unnamed(
        callback_manager=CallbackManager(
            [BudgetCallbackHandler(team, model="gpt-4o-mini"), BudgetCallbackHandler(Ledger("memory://"))]
        )
    )
    for _ in range(3):
        with pytest.raises(InvalidInputError, match="model"):
            llm.chat(HI)
    assert _held(team) == 0


def test_both_ledgers_charge_a_call_both_allow() -> None:
    team, glob = _team(), Ledger("memory://", policy=BudgetPolicy(daily_usd="5"))
    llm = _LLM(callback_manager=CallbackManager([BudgetCallbackHandler(team), BudgetCallbackHandler(glob)]))
    llm.chat(HI)
    for ledger in (team, glob):
        [row] = [r for r in ledger.store.rollup([ledger.day()]) if r.values.get("requests")]
        assert (row.values["input_tokens"], row.values["output_tokens"], row.values["requests"]) == (
            100,
            7,
            1,
        )
