"""``CachedLLM`` looks up, stores and records under the payer its wrapped LLM's
``BudgetCallbackHandler`` charges (its ``feature=`` / ``user=``; without one, a
``CostEventHandler``'s), not only under an
``attribute()`` block (review s21 saving, findings 3 and 4): a hit and a semantic cache's paid
embedding calls are reported on that payer and counted in its budget, and with ``scope=None``
one user is never served another user's cached answer. An enclosing ``attribute()`` block still
wins. Real LlamaIndex runs (a ``CustomLLM``, ``MockLLM``) on a real memory ledger, read back with
``build_report``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from llama_index.core.base.llms.types import (
    ChatMessage,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.callbacks import CallbackManager
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.llms import MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from pydantic import PrivateAttr

from llamaindex_tokenbudget import BudgetCallbackHandler, CachedLLM, CostEventHandler, RoutedLLM
from tokenbudget_core import BudgetPolicy, FeatureBudget, attribute
from tokenbudget_core.embeddings import HashingEmbedder, as_embedder
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.reports import build_report
from tokenbudget_core.response_cache import ExactCache
from tokenbudget_core.semantic_cache import SemanticCache

RAW = {"model": "gpt-4o-mini", "choices": [{"finish_reason": "stop"}],
       "usage": {"prompt_tokens": 100, "completion_tokens": 10}}  # fmt: skip
QUESTION = "What is my account balance?"
HOWS = ["chat", "complete", "stream_chat", "achat", "acomplete", "astream_chat", "astream_complete"]


class Bank(CustomLLM):
    """Answers "<owner>'s answer #<n>" (100 / 10 tokens on gpt-4o-mini). The owner and the call
    count are private state, not settings: LLMs of different owners key the cache alike."""

    _owner: str = PrivateAttr(default="")
    _calls: int = PrivateAttr(default=0)

    def __init__(self, owner: str, **data: Any) -> None:
        super().__init__(**data)
        self._owner = owner

    @property
    def calls(self) -> int:
        return self._calls

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="gpt-4o-mini", is_chat_model=False)

    def _answer(self) -> str:
        self._calls += 1
        return f"{self._owner}'s answer #{self._calls}"

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self._answer(), raw=RAW)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        words = self._answer().split(" ")

        def gen() -> Iterator[CompletionResponse]:
            text = ""
            for i, word in enumerate(words):
                delta = word if i == 0 else " " + word
                text += delta
                last = i == len(words) - 1
                yield CompletionResponse(text=text, delta=delta, raw=RAW if last else None)

        return gen()


def paid_semantic(ledger: Ledger) -> SemanticCache:
    """A semantic cache whose embedding calls are paid (text-embedding-3-small) and recorded."""
    hashing = HashingEmbedder()
    embedder = as_embedder(lambda texts: hashing.embed(texts), model="text-embedding-3-small")
    return SemanticCache(embedder=embedder, ledger=ledger)


CACHES = {"exact": lambda ledger: ExactCache(ledger=ledger), "semantic": paid_semantic}


def new_ledger() -> Ledger:
    return Ledger("memory://", policy=BudgetPolicy(features={"bank": FeatureBudget(user_daily_usd="1")}))


def user_llm(ledger: Ledger, cache: Any, user: str) -> tuple[CachedLLM, Bank]:
    inner = Bank(
        user, callback_manager=CallbackManager([BudgetCallbackHandler(ledger, feature="bank", user=user)])
    )
    return CachedLLM(inner, cache), inner


async def aask(llm: CachedLLM, how: str, text: str = QUESTION) -> str:
    messages = [ChatMessage(role="user", content=text)]
    if how == "chat":
        return llm.chat(messages).message.content or ""
    if how == "complete":
        return llm.complete(text).text
    if how == "stream_chat":
        return "".join(r.delta or "" for r in llm.stream_chat(messages))
    if how == "achat":
        return (await llm.achat(messages)).message.content or ""
    if how == "acomplete":
        return (await llm.acomplete(text)).text
    if how == "astream_chat":
        return "".join([r.delta or "" async for r in await llm.astream_chat(messages)])
    assert how == "astream_complete"
    return "".join([r.delta or "" async for r in await llm.astream_complete(text)])


def ask(llm: CachedLLM, how: str, text: str = QUESTION) -> str:
    return asyncio.run(aask(llm, how, text))


def rows(ledger: Ledger) -> dict[str | None, Any]:
    return {r.key: r for r in build_report(ledger).breakdown("user").rows if r.requests or r.cache_hits}


@pytest.mark.parametrize("kind", sorted(CACHES))
@pytest.mark.parametrize("how", HOWS)
def test_each_user_is_served_only_their_own_answers(kind: str, how: str) -> None:
    ledger = new_ledger()
    cache = CACHES[kind](ledger)
    (alice, alice_bank), (bob, bob_bank) = user_llm(ledger, cache, "alice"), user_llm(ledger, cache, "bob")

    assert ask(alice, how) == "alice's answer #1"
    assert ask(bob, how) == "bob's answer #1"  # not alice's, cached a moment ago
    assert ask(alice, how) == "alice's answer #1"  # each served their own from the cache
    assert ask(bob, how) == "bob's answer #1"
    assert (alice_bank.calls, bob_bank.calls) == (1, 1)


@pytest.mark.parametrize("kind", sorted(CACHES))
@pytest.mark.parametrize("how", HOWS)
def test_hits_and_overhead_are_reported_on_the_handlers_payer(kind: str, how: str) -> None:
    ledger = new_ledger()
    cache = CACHES[kind](ledger)
    (alice, _), (bob, _) = user_llm(ledger, cache, "alice"), user_llm(ledger, cache, "bob")
    for llm in (alice, bob, alice, bob, bob):
        ask(llm, how)

    report = rows(ledger)
    assert None not in report  # nothing charged to nobody: hits and embedding calls included
    assert report["alice"].cache_hits == 1
    assert report["bob"].cache_hits == 2
    assert report["alice"].saved_usd > 0
    assert report["bob"].saved_usd == 2 * report["alice"].saved_usd
    call = report["alice"].saved_usd  # one model call's price (100 / 10 tokens)
    totals = build_report(ledger).totals
    if kind == "semantic":
        assert totals.overhead_requests > 0
        assert report["alice"].cost_usd > call
        assert report["bob"].cost_usd > call
    else:
        assert totals.overhead_requests == 0
        assert report["alice"].cost_usd == report["bob"].cost_usd == call
    assert sum(r.cost_usd for r in report.values()) == totals.cost_usd
    for user in ("alice", "bob"):  # what the user is reported to spend is what their budget counts
        assert ledger.state(feature="bank", user=user).used["user_daily_usd"] == report[user].cost_usd


@pytest.mark.parametrize("how", ["complete", "achat", "astream_chat"])
def test_an_attribute_block_still_wins_over_the_handler(how: str) -> None:
    ledger = new_ledger()
    cache = paid_semantic(ledger)
    (alice, bank), _ = user_llm(ledger, cache, "alice"), None
    with attribute(feature="bank", user="carol"):
        assert ask(alice, how) == "alice's answer #1"
        assert ask(alice, how) == "alice's answer #1"
    assert ask(alice, how) == "alice's answer #2"  # carol's entry is not alice's
    assert bank.calls == 2
    report = rows(ledger)
    assert set(report) == {"carol", "alice"}
    assert (report["carol"].cache_hits, report["alice"].cache_hits) == (1, 0)


def test_users_asking_at_once_are_never_served_each_others_answers() -> None:
    ledger = new_ledger()
    cache = paid_semantic(ledger)
    users = [f"u-{i}" for i in range(6)]
    llms = {u: user_llm(ledger, cache, u)[0] for u in users}

    async def one(user: str, how: str) -> tuple[str, str]:
        return user, await aask(llms[user], how)

    async def main() -> list[tuple[str, str]]:
        jobs = [
            one(u, how) for _ in range(3) for how in ("achat", "astream_chat", "acomplete") for u in users
        ]
        return await asyncio.gather(*jobs)

    for user, answer in asyncio.run(main()):
        assert answer.startswith(f"{user}'s answer"), (user, answer)
    assert None not in rows(ledger)


def test_mock_llm_hit_and_embedding_calls_are_the_handlers_payers() -> None:
    """The reviewer's case: ``MockLLM`` with the payer on its handler, a paid semantic cache."""
    ledger = new_ledger()
    handler = BudgetCallbackHandler(ledger, model="gpt-4o-mini", feature="bank", user="u-9")
    inner = MockLLM(max_tokens=5, callback_manager=CallbackManager([handler]))
    llm = CachedLLM(inner, paid_semantic(ledger), model="gpt-4o-mini")
    first, second = llm.complete("Say hi"), llm.complete("Say hi")
    assert "cache_hit" in second.additional_kwargs
    assert second.text == first.text
    report = rows(ledger)
    assert set(report) == {"u-9"}
    assert report["u-9"].cache_hits == 1
    assert build_report(ledger).totals.overhead_requests > 0


def test_the_payer_of_a_routed_llms_tiers() -> None:
    """A ``CachedLLM`` around a ``RoutedLLM``: the handlers are on the tier LLMs."""
    ledger = new_ledger()
    cache = paid_semantic(ledger)

    def routed(user: str) -> CachedLLM:
        handler = BudgetCallbackHandler(ledger, feature="bank", user=user)
        tiers = {name: Bank(user, callback_manager=CallbackManager([handler])) for name in ("small", "large")}
        tiered = RoutedLLM(tiers, models={"small": "gpt-4o-mini", "large": "gpt-4o"})
        return CachedLLM(tiered, cache, model="gpt-4o")

    alice, bob = routed("alice"), routed("bob")
    assert ask(alice, "chat") == "alice's answer #1"
    assert ask(bob, "chat") == "bob's answer #1"
    assert ask(bob, "chat") == "bob's answer #1"
    report = rows(ledger)
    assert None not in report
    assert report["bob"].cache_hits == 1


def test_without_any_payer_the_default_scope_is_shared_as_documented() -> None:
    """No ``attribute()`` block and a handler naming no payer: one scope for everyone (the
    docstring's warning), and the hit is recorded on no user."""
    ledger = new_ledger()
    cache = ExactCache(ledger=ledger)
    one = CachedLLM(Bank("one", callback_manager=CallbackManager([BudgetCallbackHandler(ledger)])), cache)
    two = CachedLLM(Bank("two"), cache)
    assert ask(one, "complete") == "one's answer #1"
    assert ask(two, "complete") == "one's answer #1"
    assert rows(ledger)[None].cache_hits == 1
    assert "no payer known" in (CachedLLM.__doc__ or "").lower()
    assert Decimal(0) < rows(ledger)[None].saved_usd


@pytest.mark.parametrize("how", ["complete", "achat", "astream_chat"])
def test_the_payer_a_cost_event_handler_records_calls_on(how: str) -> None:
    """No budget handler on the LLM: the payer of the ``CostEventHandler`` on the dispatcher,
    which records every LLM call, is the cache's payer too; an ``attribute()`` block still wins."""
    ledger = new_ledger()
    handler = CostEventHandler(ledger=ledger, feature="bank", user="dora")
    get_dispatcher().add_event_handler(handler)
    try:
        bank = Bank("dora")
        llm = CachedLLM(bank, paid_semantic(ledger))
        assert ask(llm, how) == ask(llm, how) == "dora's answer #1"
        with attribute(feature="bank", user="erin"):
            assert ask(llm, how) == "dora's answer #2"  # erin's scope: not dora's entry
    finally:
        get_dispatcher().event_handlers.remove(handler)
    report = rows(ledger)
    assert set(report) == {"dora", "erin"}
    assert report["dora"].cache_hits == 1
    assert ledger.state(feature="bank", user="dora").used["user_daily_usd"] == report["dora"].cost_usd
    assert bank.calls == 2
