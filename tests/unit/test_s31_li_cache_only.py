"""The ladder's ``cache_only`` step in LlamaIndex (issue 4, section 6): from that share of a
budget the ledger refuses a call, so a ``CachedLLM`` still answers a question it cached (its hit
never reaches the wrapped LLM's ``BudgetCallbackHandler``) while a new question is refused by
that handler with ``step == "cache_only"`` before the wrapped LLM is called. Before, the step was
advice and the new question was sent. Real LlamaIndex LLM calls (``MockLLM``, which counts the
calls that reach it here), a real memory ledger."""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms import ChatMessage, MockLLM

from llamaindex_tokenbudget import BudgetCallbackHandler, CachedLLM
from tokenbudget_core import BudgetPolicy, ExactCache, FeatureBudget, Ledger, Usage
from tokenbudget_core.errors import BudgetExceededError

PAYER = {"feature": "chat", "user": "u1"}


class CountingLLM(MockLLM):
    """LlamaIndex's mock LLM, noting each answer it writes (a call that went out) in ``SENT`` (not
    in a field of its own: the cache keys a request by the LLM's settings)."""

    def _generate_text(self, length: int) -> str:
        SENT.append(length)
        return super()._generate_text(length)


SENT: list[int] = []


def build() -> tuple[Ledger, CachedLLM]:
    SENT.clear()
    ledger = Ledger(
        "memory://", policy=BudgetPolicy(features={"chat": FeatureBudget(user_daily_tokens=10_000)})
    )
    handler = BudgetCallbackHandler(ledger, model="gpt-4o-mini", **PAYER)
    llm = CountingLLM(max_tokens=5, callback_manager=CallbackManager([handler]))
    return ledger, CachedLLM(llm, ExactCache(ledger=ledger), model="gpt-4o-mini")


def ask(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=text)]


def push_to_cache_only(ledger: Ledger) -> None:
    used = sum(ledger.state(**PAYER).used.values())
    ledger.record(Usage(input_tokens=9_100 - int(used)), model="gpt-4o-mini", **PAYER)
    assert ledger.state(**PAYER).step == "cache_only"


def test_at_cache_only_a_cached_question_is_answered_and_a_new_one_refused_unsent() -> None:
    ledger, cached = build()
    first = cached.chat(ask("hello there"))
    push_to_cache_only(ledger)
    assert cached.chat(ask("hello there")).message.content == first.message.content
    with pytest.raises(BudgetExceededError) as refused:
        cached.chat(ask("a new question"))
    assert refused.value.step == "cache_only"
    assert len(SENT) == 1  # only the first question reached the LLM
    assert ledger.state(**PAYER).used == {"user_daily_tokens": 9_100}  # the refusal holds nothing


def test_the_async_path_enforces_it_too() -> None:
    ledger, cached = build()

    async def scenario() -> None:
        await cached.achat(ask("hello there"))
        push_to_cache_only(ledger)
        await cached.achat(ask("hello there"))
        with pytest.raises(BudgetExceededError) as refused:
            await cached.achat(ask("a new question"))
        assert refused.value.step == "cache_only"

    asyncio.run(scenario())
    assert len(SENT) == 1
