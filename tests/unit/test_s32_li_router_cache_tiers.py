"""LlamaIndex's ``RoutedLLM`` asks the caches of the tiers its budget stepped a call down from
before refusing it (issue 4, section 6; LangChain's twin: tests/unit/langchain/
test_s32_router_cache_tiers.py). From the ladder's ``cache_only`` step the ledger sends nothing,
and an answer cached while the payer's questions went to the classifier's own tier is in that
tier's ``CachedLLM``: it is served at $0 instead of the call being refused. A tier whose calls no
budget handler of the router's ledger checks is never asked. Real LlamaIndex calls (``MockLLM``,
counting the calls that reach it), a real memory ledger and response cache."""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms import ChatMessage, MockLLM

from llamaindex_tokenbudget import BudgetCallbackHandler, CachedLLM, RoutedLLM
from tokenbudget_core import BudgetPolicy, ExactCache, FeatureBudget, Ledger, Usage
from tokenbudget_core.errors import BudgetExceededError

PAYER = {"feature": "chat", "user": "u1"}
HARD = (
    "Analyze in depth the trade-offs of Paxos, Raft and PBFT, step by step, with proofs of safety "
    "and liveness. Compare their message complexity and explain the failure models."
)
OTHER_HARD = HARD.replace("Paxos, Raft and PBFT", "two-phase and three-phase commit")
SENT: list[int] = []


class CountingLLM(MockLLM):
    """LlamaIndex's mock LLM, noting each answer it writes (a call that went out) in ``SENT``."""

    def _generate_text(self, length: int) -> str:
        SENT.append(length)
        return super()._generate_text(length)


def build(*, large_checked: bool = True, small_output: int = 5) -> tuple[Ledger, RoutedLLM]:
    SENT.clear()
    ledger = Ledger(
        "memory://", policy=BudgetPolicy(features={"chat": FeatureBudget(user_daily_tokens=10_000)})
    )
    cache = ExactCache(ledger=ledger)

    def tier(model: str, checked: bool, output: int) -> CachedLLM:
        handlers = [BudgetCallbackHandler(ledger, model=model, **PAYER)] if checked else []
        llm = CountingLLM(max_tokens=output, callback_manager=CallbackManager(handlers))
        return CachedLLM(llm, cache, model=model)

    tiers = {"small": tier("gpt-4o-mini", True, small_output), "large": tier("gpt-4o", large_checked, 5)}
    return ledger, RoutedLLM(tiers=tiers, ledger=ledger)


def ask(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=text)]


def push_to(ledger: Ledger, share: float) -> None:
    used = sum(ledger.state(**PAYER).used.values())
    ledger.record(Usage(input_tokens=int(share * 10_000) - int(used)), model="gpt-4o-mini", **PAYER)


def route_of(response: object) -> dict[str, object]:
    route = response.additional_kwargs["tokenbudget_route"]  # type: ignore[attr-defined]
    assert isinstance(route, dict)
    return route


def test_a_question_cached_on_the_classifiers_tier_is_served_after_the_budget_stepped_it_down() -> None:
    ledger, llm = build()
    first = llm.chat(ask(HARD))
    assert route_of(first)["tier"] == "large"  # normal budget: the classifier's tier, sent and cached
    push_to(ledger, 0.91)
    assert ledger.state(**PAYER).step == "cache_only"

    again = llm.chat(ask(HARD))

    assert again.message.content == first.message.content
    assert route_of(again)["tier"] == "large"
    assert "tier large's cache asked" in str(route_of(again)["reason"])
    assert len(SENT) == 1  # nothing more was sent
    with pytest.raises(BudgetExceededError) as refused:
        llm.chat(ask(OTHER_HARD))
    assert refused.value.step == "cache_only"
    assert len(SENT) == 1


def test_the_async_path_asks_the_same_caches() -> None:
    ledger, llm = build()

    async def scenario() -> None:
        first = await llm.achat(ask(HARD))
        push_to(ledger, 0.92)
        assert (await llm.achat(ask(HARD))).message.content == first.message.content
        with pytest.raises(BudgetExceededError):
            await llm.achat(ask(OTHER_HARD))

    asyncio.run(scenario())
    assert len(SENT) == 1


def test_a_tier_no_budget_handler_of_the_ledger_checks_is_asked_cache_only() -> None:
    """The large tier's calls are not checked: asked as an alternate, its ``CachedLLM`` answers
    from its cache only, so a question it lacks is refused, never sent past the budget."""
    ledger, llm = build(large_checked=False)
    push_to(ledger, 0.91)
    with pytest.raises(BudgetExceededError) as refused:
        llm.chat(ask(HARD))
    assert refused.value.step == "cache_only"
    assert SENT == []


def test_streams_ask_the_same_caches() -> None:
    ledger, llm = build()
    first = llm.chat(ask(HARD))
    push_to(ledger, 0.91)
    chunks = list(llm.stream_chat(ask(HARD)))
    assert chunks[-1].message.content == first.message.content
    assert route_of(chunks[-1])["tier"] == "large"

    async def scenario() -> str:
        got = [c async for c in await llm.astream_chat(ask(HARD))]
        return str(got[-1].message.content)

    assert asyncio.run(scenario()) == first.message.content
    with pytest.raises(BudgetExceededError):
        list(llm.stream_chat(ask(OTHER_HARD)))
    assert len(SENT) == 1


def test_an_alternate_the_budget_would_take_is_not_sent() -> None:
    """(regression review s32) The small tier asks for 3,000 output tokens, so at 65% its call is
    refused (it would cross cache_only) while the large tier's 5-token call would fit: asked as an
    alternate, it was sent to the premium model though the payer's call was refused."""
    ledger, llm = build(small_output=3_000)
    push_to(ledger, 0.65)
    with pytest.raises(BudgetExceededError) as refused:
        llm.chat(ask(HARD))
    assert refused.value.step == "cache_only"
    assert SENT == []
