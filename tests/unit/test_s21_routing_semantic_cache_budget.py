"""The semantic cache's paid embedding calls stop at the payer's hard limit.

Each lookup embeds the prompt (a paid call, charged to the payer as overhead ``cache``) before the
call it serves is checked, so a payer whose every call is refused used to keep spending past its
"hard" limit, one embedding per refused request. Now a paid embedder recording in a ledger does not
embed for a payer whose budgets are used up (``hard_refusal``): the lookup is a miss. Below the
limit (``soft_refusal`` included) lookups go on and serve hits; a free embedder is never held back.

Real LlamaIndex runs (``CachedLLM`` over a counting ``CustomLLM`` with the budget handler) and the
core cache's async API, on a real ``Ledger("memory://")``.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from llama_index.core.base.llms.types import CompletionResponse, CompletionResponseGen, LLMMetadata
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from pydantic import PrivateAttr

from llamaindex_tokenbudget import BudgetCallbackHandler, CachedLLM
from tokenbudget_core import BudgetPolicy, FeatureBudget, Ledger, TokenCounter, Usage, attribute, cost_of
from tokenbudget_core.cache_keys import CacheRequest
from tokenbudget_core.cached_response import CachedResponse
from tokenbudget_core.embeddings import as_embedder
from tokenbudget_core.errors import BudgetExceededError
from tokenbudget_core.semantic_cache import SemanticCache

LIMIT = Decimal("0.01")
EMBED_MODEL = "text-embedding-3-large"
PAYER = {"tenant": "t", "feature": "docs", "user": "u"}


class CountingLLM(CustomLLM):
    """Answers ``answer <n>`` with reported usage, counting its calls."""

    _calls: int = PrivateAttr(default=0)

    @property
    def calls(self) -> int:
        return self._calls

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="gpt-4o-mini", num_output=100, is_chat_model=False)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self._calls += 1
        raw = {"model": "gpt-4o-mini", "usage": {"prompt_tokens": 100, "completion_tokens": 10}}
        return CompletionResponse(text=f"answer {self._calls}", raw=raw)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        raise NotImplementedError


class Embed:
    """A paid (or free) embedding endpoint stand-in that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        return [[1.0, float(len(t)), 0.2] for t in texts]


def ledger() -> Ledger:
    return Ledger("memory://", policy=BudgetPolicy(features={"docs": FeatureBudget(user_daily_usd=LIMIT)}))


def spend(book: Ledger) -> Decimal:
    used = book.state(feature="docs", user="u").used["user_daily_usd"]
    assert isinstance(used, Decimal)
    return used


def use(book: Ledger, share: str) -> None:
    """Spend ``share`` of the payer's budget on a model call (``record`` never refuses)."""
    tokens = int(Decimal(share) * LIMIT / Decimal("0.00000015"))  # gpt-4o-mini input price
    book.record(Usage(input_tokens=tokens), model="gpt-4o-mini", feature="docs", user="u")


def cached_llm(book: Ledger, embed: Embed, *, paid: bool = True) -> tuple[CachedLLM, CountingLLM]:
    inner = CountingLLM(
        callback_manager=CallbackManager([BudgetCallbackHandler(book, max_output_tokens=100)])
    )
    embedder = as_embedder(embed, model=EMBED_MODEL, paid=paid)
    return CachedLLM(inner, SemanticCache(embedder=embedder, ledger=book), model="gpt-4o-mini"), inner


def prompt(i: int) -> str:
    return f"question {i}: " + "please explain the quarterly report in detail " * 30


def embedding_cost(text: str) -> Decimal:
    cost = cost_of(Usage(input_tokens=int(TokenCounter.for_model(EMBED_MODEL).count(text))), EMBED_MODEL)
    assert cost is not None
    return cost


def test_refused_requests_stop_paying_for_embeddings_at_the_hard_limit() -> None:
    book, embed = ledger(), Embed()
    llm, inner = cached_llm(book, embed)
    with attribute(**PAYER):
        use(book, "0.99")
        refused = 0
        for i in range(200):
            try:
                llm.complete(prompt(i))
            except BudgetExceededError:
                refused += 1
            if i == 99:
                halfway, embedded = spend(book), embed.calls
    assert (refused, inner.calls) == (200, 0)
    # the spend stopped at the limit (past it by at most the one embedding that crossed it)...
    assert spend(book) - LIMIT <= max(embedding_cost(prompt(i)) for i in range(200))
    # ...and stayed there: the last 100 refused requests embedded nothing, paid nothing
    assert (spend(book), embed.calls) == (halfway, embedded)
    assert embed.calls < 10


def test_a_payer_with_room_is_still_served_from_the_cache() -> None:
    book, embed = ledger(), Embed()
    llm, inner = cached_llm(book, embed)
    with attribute(**PAYER):
        assert llm.complete(prompt(1)).text == "answer 1"
        use(book, "0.98")  # soft_refusal: every model call is refused, a hit still serves
        assert book.state().step == "soft_refusal"
        before = embed.calls
        again = llm.complete(prompt(1))
    assert again.text == "answer 1"
    assert "cache_hit" in again.additional_kwargs
    assert (inner.calls, embed.calls) == (1, before + 1)


def test_a_free_embedder_still_serves_hits_past_the_limit() -> None:
    book, embed = ledger(), Embed()
    llm, inner = cached_llm(book, embed, paid=False)
    with attribute(**PAYER):
        assert llm.complete(prompt(1)).text == "answer 1"
        use(book, "1.5")
        assert book.state().step == "hard_refusal"
        assert llm.complete(prompt(1)).text == "answer 1"  # costs nothing: not held back
    assert inner.calls == 1


@pytest.mark.parametrize("how", ["sync", "async"])
def test_lookup_and_store_do_not_embed_for_a_payer_past_the_limit(how: str) -> None:
    book, embed = ledger(), Embed()
    cache = SemanticCache(embedder=as_embedder(embed, model=EMBED_MODEL), ledger=book)
    request = CacheRequest.from_text(
        model="gpt-4o-mini", prompt="What is a token?", params={"temperature": 0}
    )
    answer = CachedResponse(content="A piece of text.", model="gpt-4o-mini", usage=Usage(output_tokens=5))
    with attribute(**PAYER):
        use(book, "1.2")
        spent = spend(book)
        if how == "sync":
            found, stored = cache.lookup(request), cache.store(request, answer)
        else:

            async def both() -> tuple[object, bool]:
                return await cache.alookup(request), await cache.astore(request, answer)

            found, stored = asyncio.run(both())
    assert (found, stored, embed.calls, spend(book)) == (None, False, 0, spent)
    with attribute(tenant="t", feature="docs", user="v"):  # another payer, with room: served
        assert cache.store(request, answer)
        hit = cache.lookup(request)
    assert hit is not None
    assert hit.response.content == "A piece of text."
